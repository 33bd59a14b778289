"""The CLIP teacher (open_clip: trained here on captions, or pretrained weights from a local
file) and the targets cached from it."""
