"""Tables and figures built from results/: nothing in them is typed by hand."""
