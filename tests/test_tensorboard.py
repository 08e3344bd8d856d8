"""TensorBoard output of a run: scalars by split, the HPARAMS summaries in the run itself, the
custom-scalars layout, and the end-of-run figures (reliability diagram, confusion matrix).

The end-to-end test reads a real run's event file back with TensorBoard's EventAccumulator.
"""

from __future__ import annotations

import io
import json

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from conftest import TINY  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402

from softloss_cli.metrics import EvalOutputs  # noqa: E402
from softloss_cli.metrics.classification import ece  # noqa: E402
from softloss_cli.plots import classification as plots  # noqa: E402
from softloss_cli.plots.registry import task_figures  # noqa: E402
from softloss_cli.tasks import Task  # noqa: E402
from softloss_cli.train.logger import crop_to_ink, hparam_values, png_header, scalars_layout  # noqa: E402


def _outputs(n: int, c: int, seed: int = 0) -> EvalOutputs:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g) * 3
    targets = torch.randint(0, c, (n,), generator=g)
    return EvalOutputs(logits, targets, logits.softmax(-1))


# --------------------------------------------------------------------------- figures


@pytest.mark.parametrize("c", [2, 7, 30])
def test_confusion_counts_match_sklearn(c):
    out = _outputs(300, c, seed=c)
    pred = out.scores.argmax(1)
    counts = plots.confusion_counts(pred, out.targets, c)
    expected = confusion_matrix(out.targets.numpy(), pred.numpy(), labels=list(range(c)))
    assert counts.tolist() == expected.tolist()


def test_reliability_multilabel_matches_a_loop():
    g = torch.Generator().manual_seed(3)
    scores = torch.rand(40, 6, generator=g)
    scores[0, :3] = torch.tensor([0.0, 1.0, 2 / 15])  # edges: 0 in bin 0, 1 in the last, 2/15 right-inclusive
    targets = (torch.rand(40, 6, generator=g) < scores).float()
    mean, rate, count = plots.reliability_multilabel(scores, targets, n_bins=15)
    for b in range(15):
        lo, hi = b / 15, (b + 1) / 15
        members = [(float(s), float(t)) for s, t in zip(scores.flatten().double(), targets.flatten())
                   if (lo < s <= hi) or (b == 0 and s == 0)]
        assert int(count[b]) == len(members)
        if members:
            assert float(mean[b]) == pytest.approx(sum(s for s, _ in members) / len(members), abs=1e-12)
            assert float(rate[b]) == pytest.approx(sum(t for _, t in members) / len(members), abs=1e-12)
        else:
            assert torch.isnan(mean[b]) and torch.isnan(rate[b])
    assert int(count.sum()) == scores.numel()


def test_single_label_figures_reliability_and_log_scale_confusion():
    out = _outputs(500, 30)
    figures = task_figures(out, Task("ordinal", 30))
    assert set(figures) >= {"reliability", "confusion_matrix"}
    title = figures["reliability"].axes[0].get_title()
    assert title == f"reliability (500 samples), ECE {ece(out.scores.double(), out.targets):.3f}"
    image = figures["confusion_matrix"].axes[0].images[0]
    assert isinstance(image.norm, LogNorm) and image.norm.vmin == 1.0
    shown = image.get_array()
    counts = plots.confusion_counts(out.scores.argmax(1), out.targets, 30)
    assert (shown.filled(0) == counts.numpy()).all() and shown.mask[counts.numpy() == 0].all()
    for fig in figures.values():
        matplotlib.pyplot.close(fig)


def test_log_count_axes_are_labelled_in_plain_text():
    """Every log-scaled axis of the ordinal figures (reliability counts, confusion colour bar,
    samples per class) labels its ticks as plain numbers, not mathtext (``$10^{2}$``)."""
    out = _outputs(4000, 30)
    figures = task_figures(out, Task("ordinal", 30))
    log_axes = 0
    for fig in figures.values():
        fig.canvas.draw()
        for ax in fig.axes:
            for axis in (ax.xaxis, ax.yaxis):
                if axis.get_scale() != "log":
                    continue
                log_axes += 1
                labels = [t.get_text() for t in axis.get_ticklabels() + axis.get_ticklabels(minor=True) if t.get_text()]
                assert labels and not any("$" in label for label in labels), labels
                assert {"1", "10", "100"} & set(labels), labels
        matplotlib.pyplot.close(fig)
    assert log_axes == 3


@pytest.mark.parametrize("temperature", [0.2, 5.0])  # over-confident, under-confident
def test_reliability_legend_explains_every_colour(temperature):
    """No translucent bar over another (a colour of its own, in no legend): every bar is
    opaque, and each colour drawn is a legend entry's."""
    from matplotlib.colors import to_hex

    g = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 10, (2000,), generator=g)
    logits = torch.randn(2000, 10, generator=g) + 3.0 * torch.nn.functional.one_hot(targets, 10)
    scores = (logits / temperature).softmax(-1)
    fig = task_figures(EvalOutputs(logits, targets, scores), Task("multiclass", 10))["reliability"]
    top = fig.axes[0]
    bars = [p for p in top.patches]
    (legend,) = fig.legends
    legend_colours = {to_hex(h.get_facecolor()) for h in legend.legend_handles if hasattr(h, "get_facecolor")}
    assert bars and all(p.get_alpha() in (None, 1.0) for p in bars)
    assert {to_hex(p.get_facecolor()) for p in bars} <= legend_colours
    labels = [t.get_text() for t in legend.get_texts()]
    gap = "over-confident: confidence - accuracy" if temperature < 1 else "under-confident: accuracy - confidence"
    assert gap in labels and "mean confidence of a bin" in labels
    matplotlib.pyplot.close(fig)


def test_confusion_matrix_only_up_to_50_classes_and_partial_uses_its_base_kind():
    assert "confusion_matrix" in task_figures(_outputs(200, 50), Task("multiclass", 50))
    assert "confusion_matrix" not in task_figures(_outputs(200, 51), Task("multiclass", 51))
    partial = Task("partial", 10, base_kind="multiclass")
    assert {"reliability", "confusion_matrix"} <= set(task_figures(_outputs(100, 10), partial))
    matplotlib.pyplot.close("all")


def test_multilabel_gets_a_per_label_reliability_diagram_and_no_confusion_matrix():
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(64, 10, generator=g)
    targets = (torch.rand(64, 10, generator=g) < 0.3).float()
    figures = task_figures(EvalOutputs(scores.logit(), targets, scores), Task("multilabel", 10))
    assert "reliability" in figures and "confusion_matrix" not in figures
    assert figures["reliability"].axes[0].get_title().startswith("per-label reliability (64 samples)")
    matplotlib.pyplot.close("all")


# --------------------------------------------------------------------------- layout and hparams


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
def test_png_header_matches_pillow(mode, tmp_path):
    buffer = io.BytesIO()
    Image.new(mode, (37, 11)).save(buffer, format="png")
    channels = {"L": 1, "RGB": 3, "RGBA": 4, "P": 3}[mode]
    assert png_header(buffer.getvalue()) == (11, 37, channels)
    with pytest.raises(ValueError, match="not a PNG"):
        png_header(b"GIF89a" + bytes(30))


def test_crop_to_ink_keeps_the_drawn_pixels_and_the_pad():
    import numpy as np

    rgb = np.full((40, 50, 3), 255, dtype=np.uint8)
    rgb[10:13, 20:31] = 0
    assert crop_to_ink(rgb, 4).shape == (3 + 8, 11 + 8, 3)
    assert crop_to_ink(rgb, 15).shape == (13 + 15, 31 + 15 - 5, 3)  # the pad stops at the top edge, not the left
    assert crop_to_ink(np.full((5, 6, 3), 255, dtype=np.uint8), 2).shape == (5, 6, 3)


def test_custom_scalars_layout_follows_the_task_kind():
    title = "headline (val per epoch; final val / test)"
    ordinal = scalars_layout({"val/accuracy": 0.1, "val/mae": 2.0, "val/rps": 0.1, "val/nll": 3.0,
                              "train/epoch_loss": 1.0})
    headline = ordinal[title]
    assert list(headline) == ["accuracy", "mae", "rps"]
    assert headline["mae"] == ["Multiline", [r"^(val/mae|summary/(val|test)_mae)$"]]
    multiclass = scalars_layout({"val/accuracy": 0.1, "val/nll": 3.0, "val/ece": 0.1})
    assert list(multiclass[title]) == ["accuracy", "nll", "ece"]
    assert multiclass["training"]["loss"] == ["Multiline", [r"^train/(loss|epoch_loss)$"]]
    # A scenario dataset charts its own headline metrics, not the generic multiclass ones.
    routing = scalars_layout({"val/accuracy": 0.1, "val/nll": 3.0, "val/hard_route_acc": 0.5,
                              "val/gate_mean_entropy": 0.2}, "routing_images")
    assert list(routing[title]) == ["accuracy", "gate_mean_entropy", "hard_route_acc"]


def test_headline_and_summary_tags_keep_the_task_order():
    from softloss_cli.train.logger import headline_metrics_of, headline_scalars, summary_scalars

    values = {"val/mae": 2.0, "val/accuracy": 0.1, "val/nll": 3.0, "train/epoch_loss": 1.5}
    assert headline_scalars(values, ["accuracy", "mae"]) == {
        "headline/val_accuracy": 0.1, "headline/val_mae": 2.0, "headline/train_loss": 1.5}
    metrics = {"val/accuracy": 0.5, "test/accuracy": 0.4, "test/nll": 2.0, "train/neg_violation_rate": 0.1,
               "val/nll": 1.0, "test/ece": 0.2}
    assert list(summary_scalars(metrics, ["accuracy", "nll", "neg_violation_rate"])) == [
        "summary/test_accuracy", "summary/test_nll", "summary/val_accuracy", "summary/val_nll",
        "summary/train_neg_violation_rate"]
    # a partial task's headline includes its training-split metric; a scenario dataset has its own
    assert headline_metrics_of(metrics, "partial") == ["accuracy", "nll", "neg_violation_rate"]
    assert headline_metrics_of({"val/accuracy": 1.0, "val/hard_route_acc": 1.0}, "multiclass", "routing_images") == [
        "accuracy", "hard_route_acc"]


def test_hparam_values_keys_and_types(compose_cfg):
    cfg = compose_cfg(["loss=ce", "optim.lr=0.1", "seed=3"])
    overrides = ["loss=ce", "optim.lr=0.1", "seed=3", "data.tail=5", "paths.data_root=/x", "hydra.run.dir=/y",
                 "trainer.progress=none", "+extra=abc"]
    values = hparam_values(cfg, overrides, {"data": "ordinal_images", "loss": "ce", "model": "small_cnn",
                                            "optim": "sgd", "sched": "cosine"})
    assert values["loss"] == "ce" and values["data"] == "ordinal_images" and values["model"] == "small_cnn"
    assert values["optim.lr"] == 0.1 and values["seed"] == 3.0 and values["trainer.epochs"] == float(cfg.trainer.epochs)
    assert values["loss.penalty"] == "null" and values["loss.label_smoothing"] == 0.0
    assert values["data.tail"] == 5.0 and values["extra"] == "abc"  # overrides, numbers parsed
    assert not any(k.startswith(("paths", "hydra")) or k == "trainer.progress" for k in values)
    assert all(isinstance(v, (float, str)) for v in values.values())
    # without Hydra's choices (e.g. a library user), the _target_ class names stand in
    plain = hparam_values(cfg, [])
    assert plain["loss"] == "CrossEntropyLoss" and plain["model"] == "SmallCNN" and plain["data"] == "ordinal_images"


def test_sweep_columns_are_the_hyper_parameters_that_vary(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata as hp_metadata

    from softloss_cli.train.logger import HPARAMS_FILE, sweep_columns, write_sweep_hparams

    jobs = {
        "0": {"hparams": {"loss": "ce", "seed": 0.0, "optim.lr": 0.1, "loss.label_smoothing": 0.1,
                          "loss.penalty": "null"},
              "defining": ["loss", "seed"], "metrics": ["summary/test_accuracy", "summary/val_accuracy"],
              "tb": "tb/loss=ce"},
        "1": {"hparams": {"loss": "nl", "seed": 0.0, "optim.lr": 0.1, "loss.neg_weight": 1.0, "loss.penalty": "qq"},
              "defining": ["loss", "seed"],
              "metrics": ["summary/test_accuracy", "summary/val_accuracy", "summary/train_neg_violation_rate"],
              "tb": "tb/loss=nl"},
    }
    values, domains, metrics = sweep_columns(list(jobs.values()))
    # seed and lr are constant; a knob only one loss has, at one value, is not a column
    assert list(values) == ["loss", "loss.penalty"]
    assert domains == {"loss": ["ce", "nl"], "loss.penalty": ["null", "qq"]}
    assert metrics == ["summary/test_accuracy", "summary/val_accuracy", "summary/train_neg_violation_rate"]
    # one job (or nothing differs): its defining keys
    assert list(sweep_columns([jobs["0"]])[0]) == ["loss", "seed"]

    for name, record in jobs.items():
        (tmp_path / name / record["tb"]).mkdir(parents=True)
        (tmp_path / name / HPARAMS_FILE).write_text(json.dumps(record))
    assert write_sweep_hparams(tmp_path, [tmp_path / "missing"]) == []
    written = write_sweep_hparams(tmp_path, [tmp_path / "0", tmp_path / "1", tmp_path / "missing"])
    assert written == [tmp_path / "0" / "tb" / "loss=ce", tmp_path / "1" / "tb" / "loss=nl"]
    assert not (tmp_path / "hparams").exists()  # no folder of its own: it would be a run in every tab
    write_sweep_hparams(tmp_path, [tmp_path / "0"])  # written again: replaces, never two summaries
    assert len(list(written[0].glob("events.out.tfevents.*"))) == 1
    ea = EventAccumulator(str(written[1]))
    ea.Reload()
    experiment = hp_metadata.parse_experiment_plugin_data(ea.PluginTagToContent("hparams")[hp_metadata.EXPERIMENT_TAG])
    assert [h.name for h in experiment.hparam_infos] == ["loss", "loss.penalty"]
    assert [v.string_value for v in experiment.hparam_infos[0].domain_discrete.values] == ["ce", "nl"]
    assert [m.name.tag for m in experiment.metric_infos] == metrics


def test_event_folder_of_a_sweep_job_is_named_by_its_swept_overrides(tmp_path):
    from softloss_cli.train.logger import event_dir, job_name

    overrides = ["loss=rps", "seed=0", "trainer.epochs=1", "paths.data_root=/x", "hydra.job.chdir=false"]
    assert job_name(overrides, {"loss", "seed"}) == "loss=rps,seed=0"
    assert job_name(overrides, set()) == "loss=rps,seed=0,trainer.epochs=1"  # swept keys unknown
    assert job_name(["data.root=/data/a"], {"data.root"}) == "data.root=_data_a"
    assert len(job_name([f"k{i}=" + "x" * 20 for i in range(10)], set())) <= 125
    run = tmp_path / "3"
    assert event_dir(run, "loss=rps") == run / "tb" / "loss=rps"
    assert event_dir(run) == run / "tb"
    (run / "tb" / "loss=rps").mkdir(parents=True)
    (run / "tb" / "loss=rps" / "events.out.tfevents.1.host").write_bytes(b"")
    assert event_dir(run) == run / "tb" / "loss=rps"  # a resumed job writes where it started


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_run_event_file_holds_scalars_hparams_layout_and_images(tiny_train):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.plugins.custom_scalar import metadata as cs_metadata
    from tensorboard.plugins.hparams import metadata as hp_metadata

    _, run = tiny_train("data=ordinal_images", "loss=ce", "trainer.epochs=2", "optim.lr=0.02")
    metrics = json.loads((run / "metrics.json").read_text())
    tb = run / "tb"
    assert [p for p in tb.iterdir() if p.is_dir()] == []  # HPARAMS in the run itself, no add_hparams sub-run
    ea = EventAccumulator(str(tb), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    ea.Reload()
    tags = ea.Tags()

    scalars = set(tags["scalars"])
    assert {"train/loss", "train/lr", "train/epoch_loss", "val/accuracy", "val/mae", "headline/val_mae",
            "headline/train_loss", "summary/test_mae", "summary/val_mae"} <= scalars
    headline = ("accuracy", "mae", "mae_expected", "rps", "qwk", "off1_acc", "group8_sum_mae")
    # finals: the headline ones only (single points; every metric is in metrics.json and the report)
    assert {t for t in scalars if t.startswith("summary/")} == {
        f"summary/{s}_{m}" for s in ("val", "test") for m in headline}
    assert not any(t.startswith(("test/", "final/")) for t in scalars)
    assert sorted(scalars)[0].startswith("headline/")  # the group TensorBoard lists first
    assert [e.step for e in ea.Scalars("val/accuracy")] == [e.step for e in ea.Scalars("train/epoch_loss")]
    assert [e.value for e in ea.Scalars("headline/val_mae")] == [e.value for e in ea.Scalars("val/mae")]
    assert len(ea.Scalars("val/accuracy")) == 2  # one point per epoch: the final value is under summary/
    for name in ("val/accuracy", "test/mae", "test/qwk"):
        (event,) = ea.Scalars("summary/" + name.replace("/", "_"))
        assert event.value == pytest.approx(metrics[name], rel=1e-6)  # float32 in the event file

    hp = ea.PluginTagToContent("hparams")
    assert set(hp) == {hp_metadata.EXPERIMENT_TAG, hp_metadata.SESSION_START_INFO_TAG, hp_metadata.SESSION_END_INFO_TAG}
    start = hp_metadata.parse_session_start_info_plugin_data(hp[hp_metadata.SESSION_START_INFO_TAG])
    assert start.hparams["loss"].string_value == "ce"
    assert start.hparams["data"].string_value == "ordinal_images"
    assert start.hparams["optim.lr"].number_value == pytest.approx(0.02)
    assert start.hparams["trainer.epochs"].number_value == 2
    assert start.hparams["data.train_size"].number_value == 256  # an override of the command line
    experiment = hp_metadata.parse_experiment_plugin_data(hp[hp_metadata.EXPERIMENT_TAG])
    assert [m.name.tag for m in experiment.metric_infos] == (
        [f"summary/test_{m}" for m in headline] + [f"summary/val_{m}" for m in headline])
    columns = [h.name for h in experiment.hparam_infos]
    assert columns[:6] == ["data", "model", "loss", "optim", "sched", "seed"]
    assert {"optim.lr", "trainer.epochs", "data.train_size"} <= set(columns) <= set(start.hparams)
    assert not any(c.startswith(("paths.", "hydra")) or c == "trainer.progress" for c in columns)
    end = hp_metadata.parse_session_end_info_plugin_data(hp[hp_metadata.SESSION_END_INFO_TAG])
    assert end.status == 1  # STATUS_SUCCESS
    record = json.loads((run / "hparams.json").read_text())  # what a sweep's columns are built from
    assert record["hparams"]["loss"] == "ce" and record["hparams"]["data.train_size"] == 256
    assert record["metrics"] == [m.name.tag for m in experiment.metric_infos] and record["tb"] == "tb"
    (text,) = ea.Tensors("config/text_summary")
    config_text = text.tensor_proto.string_val[0].decode()
    assert "${" not in config_text and "runs_root: runs\n" in config_text  # ${oc.env:SOFTLOSS_RUNS_ROOT,runs} resolved

    (layout_event,) = ea.Tensors(cs_metadata.CONFIG_SUMMARY_TAG)
    layout = layout_pb2.Layout.FromString(layout_event.tensor_proto.string_val[0])
    charts = {c.title: list(c.multiline.tag) for cat in layout.category for c in cat.chart}
    assert charts["mae"] == [r"^(val/mae|summary/(val|test)_mae)$"] and "accuracy" in charts and "rps" in charts

    assert {"test/reliability", "test/confusion_matrix"} <= set(tags["images"])  # + the scenario's own
    for tag in tags["images"]:
        (image,) = ea.Images(tag)
        png = (run / "plots" / f"test_{tag.split('/')[1]}.png").read_bytes()
        assert image.encoded_image_string == png  # the file's bytes, not a second encoding
        decoded = Image.open(io.BytesIO(png))
        assert (image.width, image.height) == decoded.size and image.width > 100
    assert json.loads((run / "task.json").read_text())["kind"] == "ordinal"


@pytest.mark.slow
def test_two_job_sweep_in_tensorboard_runs_named_by_overrides_headline_first(cli, tmp_path, data_root):
    """What TensorBoard's own loader finds in a 2-job sweep: one run per job, named by the
    overrides the sweep varies, no other run; the headline group first; HPARAMS columns:
    the varying hyper-parameters, headline test metrics first."""
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
    from tensorboard.plugins.hparams import metadata as hp_metadata

    sweep = tmp_path / "sweep"
    proc = cli("train", "-m", "loss=ce,rps", "seed=0", "data=ordinal_images", *TINY,
               f"paths.data_root={data_root}", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    mux = EventMultiplexer()
    mux.AddRunsFromDirectory(str(sweep))
    mux.Reload()
    assert sorted(mux.Runs()) == ["0/tb/loss=ce", "1/tb/loss=rps"]
    scalars = mux.PluginRunToTagToContent("scalars")
    for run in mux.Runs():
        tags = sorted(scalars[run])
        assert tags[0].split("/")[0] == "headline" and tags[0] in (
            "headline/train_loss", "headline/val_accuracy")
        assert {"headline/val_mae", "headline/val_rps", "headline/val_qwk"} <= set(tags)
    hparams = mux.PluginRunToTagToContent("hparams")
    experiments = {hp_metadata.parse_experiment_plugin_data(c[hp_metadata.EXPERIMENT_TAG]).SerializeToString()
                   for c in hparams.values() if hp_metadata.EXPERIMENT_TAG in c}
    assert len(experiments) == 1  # every job holds the same columns
    experiment = hp_metadata.parse_experiment_plugin_data(hparams["0/tb/loss=ce"][hp_metadata.EXPERIMENT_TAG])
    columns = [h.name for h in experiment.hparam_infos]
    assert "loss" in columns and not {"seed", "data", "trainer.epochs", "data.train_size"} & set(columns)
    assert all(c == "loss" or c.startswith("loss.") for c in columns)  # only what differs between ce and rps
    metric_tags = [m.name.tag for m in experiment.metric_infos]
    assert metric_tags[:3] == ["summary/test_accuracy", "summary/test_mae", "summary/test_mae_expected"]
    for job, line in zip(("0", "1"), [ln for ln in proc.stdout.splitlines() if ln.startswith("done:")]):
        assert line.endswith(str(sweep / job))  # one unwrapped line per job when piped
        assert line in (sweep / job / "train.log").read_text()  # and the job's log holds it


@pytest.mark.slow
def test_train_log_holds_what_the_terminal_showed(tiny_train):
    proc, run = tiny_train("data=ordinal_images", "loss=ce", "trainer.progress=plain", "trainer.epochs=2",
                           "data.train_size=200")  # a size no other test uses: the dataset is generated here
    shown = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert any(ln.startswith("generating ordinal_images (train 200") and ln.endswith("s") for ln in shown)
    assert [ln for ln in shown if ln.startswith("epoch ")][:1] and "final metrics" in proc.stdout
    log = (run / "train.log").read_text()
    for line in shown:
        if not line.endswith("..."):  # the start line of a step: its end line is logged
            assert line.rstrip() in log, line
