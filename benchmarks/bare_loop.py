"""The yardstick: a bare PyTorch loop that trains what `softloss train` trains, with nothing else.

Same data tensors (the cached ``ordinal_images`` arrays, or the CIFAR-shaped ``fake`` set),
same model class, same optimiser (SGD, Nesterov momentum 0.9, weight decay 5e-4), same
per-step cosine schedule, same batch size and epochs, and the same per-epoch shuffles
(the runner's ``(seed, epoch)`` formula, copied here), so on the CPU in float32 both do
the very same arithmetic and must end with the same validation accuracy (run_all.py checks
it). What it does not do: no Hydra, no TensorBoard, no checkpoints, no metrics beyond
accuracy, no progress bar, no per-epoch history. It does evaluate, as any real training
script does: validation accuracy after every epoch and test accuracy at the end.

    python benchmarks/bare_loop.py --train-size 10000 --epochs 2          # CPU, small_cnn
    python benchmarks/bare_loop.py --model resnet18 --data fake --device cuda --precision bf16 --channels-last

Prints one JSON line: wall and training seconds, images/s, final accuracies.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time

T0 = time.perf_counter()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def load_data(args):
    """uint8 images and int64 labels for train/val/test, plus the normalisation mean/std.

    Built by the package's own dataset builders, so both sides train on the same tensors:
    ``ordinal_images`` (cached under the data root) or ``fake`` (torchvision FakeData, 3x32x32,
    the CIFAR-shaped set the GPU benchmark uses).
    """
    from pathlib import Path

    from softloss_cli.data.synthetic import build_ordinal_images
    from softloss_cli.data.torchvision_sets import build_fake

    sizes = {"train_size": args.train_size, "val_size": args.val_size, "test_size": args.test_size}
    if args.data == "ordinal_images":
        b = build_ordinal_images(Path(args.data_root), image_size=args.image_size, **sizes)
    else:
        b = build_fake(Path(args.data_root), image_size=args.image_size, **sizes)
    splits = {s: (b.split(s).inputs, b.split(s).targets) for s in ("train", "val", "test")}
    return splits, b.mean, b.std, b.task.num_classes


def build_model(args, input_shape, num_classes):
    from softloss_cli.models import ResNet18, SmallCNN

    if args.model == "small_cnn":
        return SmallCNN(input_shape, num_classes, channels=(32, 64, 128))
    return ResNet18(input_shape, num_classes)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="ordinal_images", choices=["ordinal_images", "fake"])
    p.add_argument("--data-root", default="datasets")
    p.add_argument("--model", default="small_cnn", choices=["small_cnn", "resnet18"])
    p.add_argument("--train-size", type=int, default=20000)
    p.add_argument("--val-size", type=int, default=5000)
    p.add_argument("--test-size", type=int, default=5000)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--eval-batch-size", type=int, default=1024)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--max-steps", type=int, default=0, help="stop an epoch after this many steps (GPU timing windows)")
    p.add_argument("--no-eval", action="store_true", help="skip validation and test (pure training throughput)")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(args.seed)  # before the model, as the runner does: the same initial weights
    splits, mean, std, num_classes = load_data(args)
    mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(std, device=device).view(1, -1, 1, 1)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    # Normalised once, on the device: the whole split is a few MB.
    data = {s: ((x.to(device).float().div_(255.0) - mean) / std, y.to(device)) for s, (x, y) in splits.items()}
    data = {s: (x.contiguous(memory_format=memory_format), y) for s, (x, y) in data.items()}
    model = build_model(args, tuple(splits["train"][0].shape[1:]), num_classes).to(device, memory_format=memory_format)

    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    n = len(data["train"][1])
    steps = n // args.batch_size if n > args.batch_size else 1
    if args.max_steps:
        steps = min(steps, args.max_steps)
    total = args.epochs * steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, total)))))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    step_model = torch.compile(model) if args.compile else model

    @torch.no_grad()
    def accuracy(split):
        model.eval()
        x, y = data[split]
        correct = torch.zeros((), device=device, dtype=torch.long)
        for i in range(0, len(y), args.eval_batch_size):
            with autocast():
                correct += (model(x[i : i + args.eval_batch_size]).argmax(1) == y[i : i + args.eval_batch_size]).sum()
        model.train()
        return correct.item() / max(1, len(y))

    train_s, val_acc, epoch_rates = 0.0, float("nan"), []
    x_train, y_train = data["train"]
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed((args.seed * 1_000_003 + epoch * 7_919) % (2**63))
        order = torch.randperm(n, generator=g).to(device)
        for i in range(steps):
            idx = order[i * args.batch_size : (i + 1) * args.batch_size]
            with autocast():
                loss = F.cross_entropy(step_model(x_train[idx]).float(), y_train[idx])
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_s += time.perf_counter() - t0
        if not args.no_eval:
            val_acc = accuracy("val")
        # Per epoch, validation included: what the runner's train/images_per_s measures too.
        epoch_rates.append(steps * args.batch_size / (time.perf_counter() - t0))
    test_acc = float("nan") if args.no_eval else accuracy("test")
    result = {
        "wall_s": time.perf_counter() - T0, "train_s": train_s,
        "images_per_s": args.epochs * steps * args.batch_size / train_s, "epoch_images_per_s": epoch_rates,
        "val_accuracy": val_acc, "test_accuracy": test_acc, "final_loss": loss.item(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
