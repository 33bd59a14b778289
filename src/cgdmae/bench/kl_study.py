"""Why CGD-MAE's text-anchor KL rises while L_sim falls: a four-panel figure and its numbers.

python -m cgdmae.bench.kl_study --log results/pretrain/cgd_mae/log.csv \
    --out docs/figures/kl_study.png

(a) the logged L_sim and L_kl per epoch; (b) the trained student's anchor probabilities against
the teacher's, on cached pool crops (needs the run's checkpoint.pth and teacher targets);
(c) L_kl as a function of cos(ŝ, t̂) for the run's anchors and teacher embeddings at
τ = 100, the teacher's own learned logit scale and τ = 10; (d) a controlled run: a linear
student that sees a noisy copy of t̂ trained on 2·L_sim + 0.1·L_kl, on 0.1·L_kl alone and on
2·L_sim alone. Everything runs on the CPU in well under a minute.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

from cgdmae.pretrain.methods.cgd_mae import similarity_loss, text_kl_loss  # noqa: E402

TAU = 100.0


def read_log(path: str | Path) -> dict[str, list[float]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: [float(r[k]) for r in rows] for k in ("epoch", "sim", "kl")}


def uniform_kl(target: torch.Tensor, text: torch.Tensor, tau: float) -> float:
    """KL(P_t ‖ uniform) = log K − H(P_t): what a student that predicts nothing scores."""
    log_p = F.log_softmax(tau * F.normalize(target, dim=-1) @ text.T, dim=-1)
    return math.log(text.shape[0]) + (log_p.exp() * log_p).sum(-1).mean().item()


def at_cosine(target: torch.Tensor, cos: float, generator: torch.Generator) -> torch.Tensor:
    """Unit vectors at cosine ``cos`` from each row of ``target``, in a random direction."""
    t = F.normalize(target, dim=-1)
    u = torch.randn(t.shape, generator=generator)
    u = F.normalize(u - (u * t).sum(-1, keepdim=True) * t, dim=-1)
    return cos * t + math.sqrt(max(0.0, 1.0 - cos * cos)) * u


def kl_vs_cosine(
    target: torch.Tensor,
    text: torch.Tensor,
    cosines: list[float],
    tau: float,
    seed: int = 0,
    repeats: int = 8,
) -> list[float]:
    """Mean L_kl of students at each cosine from ``target``, ``repeats`` random errors a row."""
    gen = torch.Generator().manual_seed(seed)
    target = target.repeat(repeats, 1)
    return [text_kl_loss(at_cosine(target, c, gen), target, text, tau).item() for c in cosines]


def controlled_runs(
    target: torch.Tensor, text: torch.Tensor, steps: int = 1500, noise: float = 4.0
) -> dict[str, Any]:
    """A linear student on a noisy linear view of t̂ (so it cannot reach cos 1), three losses."""
    runs: dict[str, Any] = {}
    for name, w_sim, w_kl in (
        ("2·L_sim + 0.1·L_kl", 2.0, 0.1),
        ("0.1·L_kl alone", 0.0, 0.1),
        ("2·L_sim alone", 2.0, 0.0),
    ):
        torch.manual_seed(0)
        mix = torch.randn(target.shape[1], target.shape[1])
        x = target @ mix + noise * mix.std() * torch.randn(target.shape)
        student = torch.nn.Linear(target.shape[1], target.shape[1])
        opt = torch.optim.Adam(student.parameters(), lr=1e-3)
        curve: dict[str, list[float]] = {"step": [], "sim": [], "kl": []}
        for step in range(steps + 1):
            if step % 50 == 0:
                with torch.no_grad():
                    s = student(x)
                    curve["step"].append(step)
                    curve["sim"].append(similarity_loss(s, target).item())
                    curve["kl"].append(text_kl_loss(s, target, text, TAU).item())
            idx = torch.randint(0, len(target), (64,))
            s = student(x[idx])
            loss = w_sim * similarity_loss(s, target[idx]) + w_kl * text_kl_loss(
                s, target[idx], text, TAU
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
        runs[name] = curve
    return runs


def checkpoint_study(
    checkpoint: Path, targets: Path, n: int = 256, seed: int = 0
) -> dict[str, Any]:
    """The trained student and a freshly initialised one on ``n`` cached pool crops."""
    from cgdmae.pretrain.data import PretrainDataset, TeacherTargets
    from cgdmae.pretrain.methods import method_class
    from cgdmae.pretrain.run import build_model
    from cgdmae.training.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint)
    spec = state["config"]
    cached = TeacherTargets.load(targets)
    dataset = PretrainDataset(
        cached.paths,
        img_size=tuple(spec["model"]["img_size"]),
        scale=tuple(spec["crop_scale"]),
        seed=seed,
        targets=cached,
        targets_file=targets,
    )
    dataset.set_epoch(spec["epochs"] - 1)
    step = max(1, len(dataset) // n)
    items = [dataset[i] for i in range(0, len(dataset), step)][:n]
    images = torch.stack([it["image"] for it in items])
    teacher = F.normalize(torch.stack([it["teacher_embed"] for it in items]), dim=-1)
    out: dict[str, Any] = {"teacher": teacher, "text": state["method"]["text_embeds"]}
    for name in ("untrained", "trained"):
        torch.manual_seed(seed)
        cls = method_class("cgd_mae")
        method = cls(build_model(spec), state["method"]["text_embeds"], **cls.settings(spec))
        if name == "trained":
            method.model.load_state_dict(state["model"])
            method.load_state_dict(state["method"], strict=False)
        method.eval()
        torch.manual_seed(seed)  # the same masks for both students
        with torch.no_grad():
            latent, _, ids_restore = method.model.forward_encoder(images, method.mask_ratio)
            _, dec_tokens = method.model.forward_decoder(latent, ids_restore)
            out[name] = F.normalize(method.student_vector(latent, dec_tokens).float(), dim=-1)
    return out


def summarise(student: torch.Tensor, teacher: torch.Tensor, text: torch.Tensor, tau: float):
    ls = F.log_softmax(tau * student @ text.T, dim=-1)
    lt = F.log_softmax(tau * teacher @ text.T, dim=-1)
    top = lt.argmax(-1, keepdim=True)
    cs, ct = student @ text.T, teacher @ text.T
    cs, ct = cs - cs.mean(-1, keepdim=True), ct - ct.mean(-1, keepdim=True)
    corr = (cs * ct).sum(-1) / (cs.norm(dim=-1) * ct.norm(dim=-1))
    return {
        "cos": (student * teacher).sum(-1).mean().item(),
        "kl": text_kl_loss(student, teacher, text, tau).item(),
        "uniform_kl": uniform_kl(teacher, text, tau),
        "entropy_student": -(ls.exp() * ls).sum(-1).mean().item(),
        "entropy_teacher": -(lt.exp() * lt).sum(-1).mean().item(),
        "p_student_at_teacher_top": ls.gather(1, top).exp().mean().item(),
        "p_teacher_top": lt.gather(1, top).exp().mean().item(),
        "top1_agreement": (ls.argmax(-1, keepdim=True) == top).float().mean().item(),
        "anchor_cosine_corr": corr.mean().item(),  # Pearson r of ŝ·T and t̂·T, per crop
    }


def teacher_logit_scale(teacher_dir: Path) -> float | None:
    weights = teacher_dir / "model" / "open_clip_pytorch_model.bin"
    if not weights.is_file():
        return None
    return float(torch.load(weights, map_location="cpu", weights_only=True)["logit_scale"].exp())


def make_figure(log, ckpt, numbers, curve_cos, curves, runs, out: Path) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    (ax_a, ax_b), (ax_c, ax_d) = axes

    ax_a.plot(log["epoch"], log["sim"], "o-", color="tab:blue", label="L_sim")
    ax_a.set_xlabel("epoch")
    ax_a.set_ylabel("L_sim = ‖t̂ − ŝ‖²", color="tab:blue")
    twin = ax_a.twinx()
    twin.plot(log["epoch"], log["kl"], "s-", color="tab:red", label="L_kl (τ = 100)")
    twin.set_ylabel("L_kl = KL(P_t ‖ P_s), nats", color="tab:red")
    ax_a.set_ylim(0, max(log["sim"]) * 1.1)
    twin.set_ylim(0, max(log["kl"]) * 1.15)
    lines = ax_a.get_lines() + twin.get_lines()
    ax_a.legend(lines, [ln.get_label() for ln in lines], loc="lower left")
    ax_a.set_title("(a) demo cgd_mae run: training log (epoch means)")

    if ckpt is not None:
        t = numbers["trained"]
        p_s = F.softmax(TAU * ckpt["trained"] @ ckpt["text"].T, -1)
        p_t = F.softmax(TAU * ckpt["teacher"] @ ckpt["text"].T, -1)
        top = p_t.argmax(-1, keepdim=True)
        floor = 1e-12
        ax_b.scatter(
            p_t.flatten().clamp_min(floor),
            p_s.flatten().clamp_min(floor),
            s=3,
            alpha=0.25,
            color="grey",
            label="every (crop, anchor)",
        )
        ax_b.scatter(
            p_t.gather(1, top).flatten(),
            p_s.gather(1, top).flatten().clamp_min(floor),
            s=10,
            color="tab:red",
            label="teacher's top anchor of each crop",
        )
        ax_b.plot([floor, 1], [floor, 1], "k--", lw=1, label="P_s = P_t")
        ax_b.set_xscale("log")
        ax_b.set_yscale("log")
        ax_b.set_xlim(1e-12, 2)
        ax_b.set_ylim(1e-12, 2)
        ax_b.set_xlabel("teacher probability P_t,k (τ = 100)")
        ax_b.set_ylabel("trained student probability P_s,k (τ = 100)")
        ax_b.legend(loc="lower right", fontsize=8)
        ax_b.text(
            0.02,
            0.98,
            f"{len(ckpt['teacher'])} pool crops × {len(ckpt['text'])} anchors\n"
            f"cos(ŝ, t̂) {t['cos']:.2f}, KL {t['kl']:.2f} (uniform P_s: {t['uniform_kl']:.2f})\n"
            f"top-1 agreement {t['top1_agreement']:.0%}\n"
            f"entropy P_s {t['entropy_student']:.2f}, P_t {t['entropy_teacher']:.2f} nats",
            transform=ax_b.transAxes,
            va="top",
            fontsize=8,
            bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none"},
        )
        ax_b.set_title("(b) trained checkpoint: anchor probabilities, student vs teacher")
    else:
        ax_b.text(0.5, 0.5, "no checkpoint given", ha="center", transform=ax_b.transAxes)
        ax_b.set_axis_off()

    for (label, tau), kls in curves.items():
        ax_c.plot(curve_cos, kls, label=f"{label}, τ = {tau:.3g}")
    if ckpt is not None:
        for name, marker in (("untrained", "x"), ("trained", "*")):
            row = numbers[name]
            ax_c.plot(row["cos"], row["kl"], marker, ms=11, color="k", label=f"{name} student")
    ax_c.axhline(
        uniform_kl(ckpt["teacher"], F.normalize(ckpt["text"].float(), dim=-1), TAU)
        if ckpt is not None
        else numbers["uniform_kl"],
        ls="--",
        color="tab:blue",
        lw=1,
        label="uniform P_s, τ = 100",
    )
    ax_c.set_yscale("log")
    ax_c.set_ylim(1e-3, 50)
    ax_c.set_xlabel("cos(ŝ, t̂)   (curves: student error in a random direction)")
    ax_c.set_ylabel("L_kl, nats (batch mean)")
    ax_c.legend(fontsize=8)
    anchors = f"the run's {len(ckpt['text'])}" if ckpt is not None else "90 random"
    ax_c.set_title(f"(c) L_kl vs cosine, {anchors} anchors")
    ax_c.grid(alpha=0.3, which="both")

    colours = {"2·L_sim + 0.1·L_kl": "tab:purple", "0.1·L_kl alone": "tab:red"}
    colours["2·L_sim alone"] = "tab:blue"
    for name, run in runs.items():
        ax_d.plot(run["step"], run["kl"], color=colours[name], label=f"L_kl, trained on {name}")
    joint = runs["2·L_sim + 0.1·L_kl"]
    twin_d = ax_d.twinx()
    twin_d.plot(joint["step"], joint["sim"], ":", color="tab:purple", label="L_sim (joint run)")
    twin_d.set_ylabel("L_sim (dotted)")
    twin_d.set_ylim(0, 2.1)
    ax_d.set_ylim(0, max(max(r["kl"]) for r in runs.values()) * 1.05)
    ax_d.set_xlabel("Adam step")
    ax_d.set_ylabel("L_kl, nats (τ = 100)")
    lines = ax_d.get_lines() + twin_d.get_lines()
    ax_d.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="upper right")
    ax_d.set_title("(d) controlled: linear student on a noisy view of t̂")

    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=80)
    plt.close(fig)
    buffer.seek(0)
    # a 256-colour palette keeps the PNG small (the scatter of panel (b) has ~23k points)
    Image.open(buffer).convert("RGB").quantize(256).save(out, optimize=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", default="results/pretrain/cgd_mae/log.csv")
    parser.add_argument("--checkpoint", default="results/pretrain/cgd_mae/checkpoint.pth")
    parser.add_argument("--targets", default="results/teacher/clip_small/targets/pool.pt")
    parser.add_argument("--teacher-dir", default="results/teacher/clip_small")
    parser.add_argument("--crops", type=int, default=256, help="pool crops for panel (b)")
    parser.add_argument("--out", default="docs/figures/kl_study.png")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args(argv)

    log = read_log(args.log)
    ckpt = None
    if Path(args.checkpoint).is_file() and Path(args.targets).is_file():
        ckpt = checkpoint_study(Path(args.checkpoint), Path(args.targets), args.crops)
        teacher, text = ckpt["teacher"], F.normalize(ckpt["text"].float(), dim=-1)
    else:  # synthetic stand-ins: 90 anchors and 256 teacher vectors in 128 dimensions
        gen = torch.Generator().manual_seed(0)
        text = F.normalize(torch.randn(90, 128, generator=gen), dim=-1)
        teacher = F.normalize(torch.randn(256, 128, generator=gen), dim=-1)
    scale = teacher_logit_scale(Path(args.teacher_dir))
    taus = [("CGD-MAE's", TAU)]
    if scale is not None:
        taus.append(("teacher's learned scale", scale))
    taus.append(("for comparison", 10.0))

    numbers: dict[str, Any] = {"log": log, "teacher_logit_scale": scale}
    numbers["uniform_kl"] = uniform_kl(teacher, text, TAU)
    if ckpt is not None:
        for name in ("untrained", "trained"):
            numbers[name] = summarise(ckpt[name], teacher, text, TAU)
            for _, tau in taus[1:]:
                numbers[f"{name}_tau{tau:.3g}"] = summarise(ckpt[name], teacher, text, tau)
        # the same cosine as the trained student, the error in a random direction
        gen = torch.Generator().manual_seed(0)
        random_error = at_cosine(teacher, numbers["trained"]["cos"], gen)
        numbers["random_error_at_trained_cos"] = summarise(random_error, teacher, text, TAU)
    cosines = [round(0.05 * k, 2) for k in range(-4, 20)] + [0.98]
    curves = {(label, tau): kl_vs_cosine(teacher, text, cosines, tau) for label, tau in taus}
    numbers["kl_vs_cosine"] = {
        f"tau{tau:.3g}": dict(zip(map(str, cosines), kls, strict=True))
        for (_, tau), kls in curves.items()
    }
    runs = controlled_runs(teacher if ckpt is None else _pool_teachers(args.targets), text)
    numbers["controlled"] = {
        name: {
            "kl_start": r["kl"][0],
            "kl_min": min(r["kl"]),
            "kl_min_step": r["step"][r["kl"].index(min(r["kl"]))],
            "kl_end": r["kl"][-1],
            "sim_end": r["sim"][-1],
        }
        for name, r in runs.items()
    }
    make_figure(log, ckpt, numbers, cosines, curves, runs, Path(args.out))
    text_out = json.dumps(numbers, indent=1, default=float)
    if args.json:
        Path(args.json).write_text(text_out)
    print(text_out)
    return numbers


def _pool_teachers(targets: str | Path) -> torch.Tensor:
    """One cached teacher embedding per pool image (the first view)."""
    data = torch.load(targets, map_location="cpu", weights_only=True)
    return F.normalize(data["embeds"][:, 0].float(), dim=-1)


if __name__ == "__main__":
    main()
