"""The bundled trainer: loss, temperature clamp, weight-decay groups, schedule, loader order and
splitting, training end to end, exact resume, DDP over gloo, and the evaluation metrics."""

from __future__ import annotations

import json
import math
import os
import sys

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import synth_shapes  # noqa: E402

from witcurate.trainer import optim  # noqa: E402
from witcurate.trainer.checkpoint import prune_step_copies  # noqa: E402
from witcurate.trainer.data import LoaderSpec, count_samples, epoch_batches, expand_shards  # noqa: E402
from witcurate.trainer.evaluate import evaluate, retrieval_metrics, topk_accuracy  # noqa: E402
from witcurate.trainer.loss import INIT_LOGIT_SCALE, MAX_LOGIT_SCALE, clamp_logit_scale, make_loss  # noqa: E402
from witcurate.trainer.model import create_model  # noqa: E402
from witcurate.trainer.train import TrainArgs, train  # noqa: E402
from ports import free_port

MODEL = "witcurate-tiny"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("shards")
    synth_shapes.write_tar(str(d / "00000.tar"), 48, seed=1, corrupt=(5,))   # one undecodable image
    synth_shapes.write_tar(str(d / "00001.tar"), 48, seed=2, start=48)
    return d


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    """Two shards whose captions are unique, to see exactly which samples a loader yields."""
    d = tmp_path_factory.mktemp("keyed")
    synth_shapes.write_tar(str(d / "00000.tar"), 48, seed=1, corrupt=(5,), tag_keys=True, size=16)
    synth_shapes.write_tar(str(d / "00001.tar"), 48, seed=2, start=48, tag_keys=True, size=16)
    return d


@pytest.fixture(scope="module")
def tiny():
    return create_model(MODEL)


def _losses(run_dir) -> dict[int, float]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return {r["step"]: r["loss"] for r in map(json.loads, f)}


# ----------------------------------------------------------------------------- loss and optimizer

def test_loss_matches_a_hand_computation_on_three_pairs():
    torch.manual_seed(0)
    img = F.normalize(torch.randn(3, 4), dim=-1)
    txt = F.normalize(torch.randn(3, 4), dim=-1)
    scale = 10.0
    sims = [[sum(img[i, k].item() * txt[j, k].item() for k in range(4)) for j in range(3)] for i in range(3)]

    def ce(rows):   # mean over rows of -log softmax(row)[i]
        return sum(-(scale * r[i]) + math.log(sum(math.exp(scale * v) for v in r)) for i, r in enumerate(rows)) / 3

    by_image = ce(sims)
    by_text = ce([[sims[i][j] for i in range(3)] for j in range(3)])
    expected = (by_image + by_text) / 2
    got = make_loss()(img, txt, torch.tensor(scale)).item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_logit_scale_starts_at_1_over_007_and_is_clamped_at_100(tiny):
    model = tiny[0]
    assert model.logit_scale.item() == pytest.approx(INIT_LOGIT_SCALE, rel=1e-6)
    with torch.no_grad():
        model.logit_scale.fill_(7.0)
    clamp_logit_scale(model)
    assert model.logit_scale.item() == pytest.approx(MAX_LOGIT_SCALE)
    assert model.logit_scale.exp().item() == pytest.approx(100.0, rel=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(INIT_LOGIT_SCALE)


def test_weight_decay_is_off_for_gains_biases_norms_and_logit_scale(tiny):
    model = tiny[0]
    groups = optim.param_groups(model, 0.1)
    no_decay = {id(p) for p in groups[0]["params"]}
    decay = {id(p) for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.0 and groups[1]["weight_decay"] == 0.1
    named = dict(model.named_parameters())
    assert len(no_decay) + len(decay) == len(named)
    for name in ("logit_scale", "ln_final.weight", "ln_final.bias", "visual.bn1.weight",
                 "transformer.resblocks.0.ln_1.weight", "transformer.resblocks.0.attn.in_proj_bias"):
        assert id(named[name]) in no_decay, name
    for name in ("token_embedding.weight", "text_projection", "visual.conv1.weight",
                 "transformer.resblocks.0.mlp.c_fc.weight"):
        assert id(named[name]) in decay, name
    assert all(p.ndim >= 2 for p in groups[1]["params"])


def test_models_of_one_name_share_one_tokenizer_that_matches_open_clips():
    import open_clip
    first, second = create_model(MODEL)[3], create_model(MODEL)[3]
    assert first is second                    # built once per process, not per model
    text = ["red, blue circles", "a dog on the grass"]
    assert torch.equal(first(text), open_clip.get_tokenizer(MODEL)(text))


def test_warmup_then_cosine_schedule():
    lrs = [optim.cosine_lr(s, 1.0, 10, 110) for s in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.5)
    assert lrs[109] < 0.001
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


# ----------------------------------------------------------------------------- the loader

def _key_ids(texts):
    """A tokenizer stand-in: the sample number tagged on each caption ("... #00000012" -> 12)."""
    return torch.tensor([[int(t.rsplit("#", 1)[1])] for t in texts])


def _keys(spec, epoch, steps):
    return [int(i) for _, t in epoch_batches(spec, epoch, steps) for i in t[:, 0]]


def _spec(urls, **kw):
    return LoaderSpec(urls=urls, batch_size=8, preprocess=lambda im: torch.zeros(1),
                      tokenize=_key_ids, shuffle_buffer=16, **kw)


def test_loader_order_is_a_function_of_seed_and_epoch(keyed):
    urls = expand_shards(str(keyed / "{00000..00001}.tar"))
    assert count_samples(urls) == [48, 48]
    a, b = _keys(_spec(urls, seed=3), 0, 11), _keys(_spec(urls, seed=3), 0, 11)
    assert a == b and len(a) == 88 and len(set(a)) == len(a)
    assert _keys(_spec(urls, seed=3), 1, 11) != a
    assert _keys(_spec(urls, seed=4), 0, 11) != a
    # one worker process reads exactly what the in-process loader reads
    assert _keys(_spec(urls, seed=3, workers=1), 0, 11) == a


@pytest.mark.parametrize("n_shards", [2, 1])
def test_ranks_read_disjoint_shares(keyed, n_shards):
    urls = expand_shards(str(keyed / "{00000..00001}.tar"))[:n_shards]
    per_rank = [set(_keys(_spec(urls, seed=0, rank=r, world_size=2, shuffle=False), 0, 2)) for r in (0, 1)]
    assert len(per_rank[0]) == len(per_rank[1]) == 16
    assert not per_rank[0] & per_rank[1]


def test_a_rank_that_runs_dry_reads_its_share_again_instead_of_stopping(keyed):
    urls = expand_shards(str(keyed / "00001.tar"))
    assert len(_keys(_spec(urls), 0, 13)) == 104      # 48 samples, 104 asked for


# ----------------------------------------------------------------------------- training

def _args(**kw):
    base = dict(model=MODEL, epochs=2, batch_size=16, lr=2e-3, warmup_steps=2, workers=0,
                checkpoint_every=3, log_every=1, device="cpu", shuffle_buffer=32, print_every=60)
    base.update(kw)
    return TrainArgs(**base)


def test_training_lowers_the_loss_and_writes_a_loadable_model(shards, tmp_path):
    data = str(shards / "{00000..00001}.tar")
    metrics = train(_args(epochs=4, lr=3e-3), data, str(tmp_path), progress=lambda m: None)
    # 96 samples by the tar headers // 16; the undecodable one is skipped and made up for
    assert metrics["steps_per_epoch"] == 6 and metrics["steps"] == 24
    losses = _losses(tmp_path)
    assert sorted(losses) == list(range(1, 25))
    first, last = sum(losses[s] for s in (1, 2, 3)) / 3, sum(losses[s] for s in (22, 23, 24)) / 3
    assert last < 0.8 * first, (first, last)
    assert metrics["samples_per_second"] > 0
    # a checkpoint every 3 steps, the newest two kept: a long run's checkpoints take bounded disk
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_21.pt", "step_24.pt"]
    model, _, _, _ = create_model(MODEL, str(tmp_path / "model.pt"))
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert torch.equal(model.state_dict()["text_projection"], state["text_projection"])
    assert all(not k.startswith("module.") for k in state)


def test_pruning_keeps_the_newest_steps_by_number(tmp_path):
    for step in (3, 9, 12, 100):
        (tmp_path / f"step_{step}.pt").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("kept")
    deleted = prune_step_copies(str(tmp_path), keep_last=2)
    assert sorted(p.rsplit("/", 1)[-1] for p in deleted) == ["step_3.pt", "step_9.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "step_100.pt", "step_12.pt"]
    assert prune_step_copies(str(tmp_path), keep_last=0) == []


@pytest.mark.parametrize("instance", [{}, {"instance_weight": 1.0, "instance_views": 8}],
                         ids=["clip", "clip+instance"])
def test_resume_continues_the_loss_curve_exactly(shards, tmp_path, instance):
    """Also with the instance term, whose second views are drawn from the RNG a checkpoint saves."""
    data = str(shards / "{00000..00001}.tar")
    straight, parts = tmp_path / "straight", tmp_path / "parts"
    train(_args(**instance), data, str(straight), progress=lambda m: None)
    # stop mid-epoch (step 8 of 12, in epoch 2), between checkpoints: resume from step 6
    stopped = train(_args(stop_at_step=8, checkpoint_every=3, **instance), data, str(parts), progress=lambda m: None)
    assert stopped["stopped_early"] and stopped["steps"] == 8
    ckpt = torch.load(parts / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 8
    # make it a crash at step 8: go back to the step-6 checkpoint and the log up to then
    os.replace(parts / "checkpoints" / "step_6.pt", parts / "checkpoint.pt")
    resumed = train(_args(**instance), data, str(parts), progress=lambda m: None, resume=True)
    assert resumed["resumed_from"] == 6 and resumed["steps"] == 12
    a, b = _losses(straight), _losses(parts)
    assert sorted(b) == list(range(1, 13))
    assert [a[s] for s in range(1, 13)] == [b[s] for s in range(1, 13)]
    sa = torch.load(straight / "model.pt", weights_only=True)
    sb = torch.load(parts / "model.pt", weights_only=True)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_set_smaller_than_one_batch_trains_in_one_step_an_epoch(shards, tmp_path):
    said = []
    metrics = train(_args(epochs=2, batch_size=500), str(shards / "00001.tar"), str(tmp_path), progress=said.append)
    assert metrics["global_batch_size"] == 48 and metrics["steps"] == 2
    assert any("do not fill a batch of 500" in line for line in said)


def test_cli_parses_typed_flags_and_reports_bad_data(tmp_path, capsys):
    from witcurate.trainer.__main__ import build_parser, main
    ns = build_parser().parse_args(["--data", "x.tar", "--out", "o", "--epochs", "3", "--lr", "0.01",
                                    "--no-keep-step-checkpoints"])
    assert ns.epochs == 3 and ns.lr == 0.01 and ns.keep_step_checkpoints is False
    assert main(["--data", str(tmp_path / "missing-{0..1}.tar"), "--out", str(tmp_path / "o"),
                 "--device", "cpu"]) == 2
    assert "shard not found" in capsys.readouterr().err


# ----------------------------------------------------------------------------- DDP over gloo


def _ddp_worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      GLOO_SOCKET_IFNAME="lo")
    import torch.distributed as dist
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    # 1) one step on a fixed global batch, each rank holding half of it
    torch.manual_seed(0)
    model, _, _, tok = create_model(MODEL)
    model.eval()      # BatchNorm on running stats, so per-rank halves see what the full batch sees
    images = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    texts = tok([f"{n} red circles on grass" for n in ("one", "two", "three", "four")] * 2)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    half = slice(rank * 4, rank * 4 + 4)
    fi, ft, s = ddp(images[half], texts[half])[:3]
    loss = make_loss(rank, world)(fi, ft, s)
    loss.backward()          # DDP averages the gradients over the ranks here
    grads = {n: p.grad for n, p in model.named_parameters()}
    torch.save({"loss": loss.item(), "grads": grads}, os.path.join(out, f"step{rank}.pt"))
    # 2) the trainer itself under this process group
    metrics = train(_args(epochs=1, batch_size=8, checkpoint_every=0), data,
                    os.path.join(out, "run"), progress=lambda m: None)
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(metrics, f)
    dist.destroy_process_group()


def _ddp_ranks(world: int, port: int, data: str, out: str) -> None:
    """Fork the ranks from this launcher, a spawned process that has imported this module (torch,
    open_clip) once: spawned ranks import them each (20 s for this test against 10 s). They are
    not forked from the test process itself, which has threads of its own (torch's, Beam's)."""
    import torch.multiprocessing as mp
    mp.start_processes(_ddp_worker, args=(world, port, data, out), nprocs=world, join=True,
                       start_method="fork")


def test_ddp_on_two_cpu_processes_matches_one_process_on_the_global_batch(shards, tmp_path):
    import multiprocessing
    data = str(shards / "{00000..00001}.tar")
    launcher = multiprocessing.get_context("spawn").Process(
        target=_ddp_ranks, args=(2, free_port(), data, str(tmp_path)))
    launcher.start()
    launcher.join(timeout=300)
    if launcher.exitcode is None:          # hung: killed and reaped, so the message says -9
        launcher.kill()
        launcher.join()
    assert launcher.exitcode == 0, f"the DDP ranks failed or hung (exit {launcher.exitcode}; their errors are above)"

    torch.manual_seed(0)
    model, _, _, tok = create_model(MODEL)
    model.eval()
    images = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    texts = tok([f"{n} red circles on grass" for n in ("one", "two", "three", "four")] * 2)
    fi, ft, s = model(images, texts)[:3]
    loss = make_loss()(fi, ft, s)
    loss.backward()
    for rank in (0, 1):
        ddp = torch.load(tmp_path / f"step{rank}.pt", weights_only=True)
        # every rank's loss is the loss of the whole global batch, and so are its gradients
        assert ddp["loss"] == pytest.approx(loss.item(), rel=1e-5)
        for name, p in model.named_parameters():
            assert torch.allclose(ddp["grads"][name], p.grad, rtol=1e-4, atol=1e-6), name

    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["world_size"] == 2 and r0["global_batch_size"] == 16
    assert r0["steps"] == r1["steps"] == 6                      # 96 samples // 16
    assert r0["final_loss"] == r1["final_loss"] and math.isfinite(r0["final_loss"])
    assert r0["ranks_in_sync"] is True and r1["ranks_in_sync"] is True
    assert (tmp_path / "run" / "model.pt").exists()


# ----------------------------------------------------------------------------- evaluation

def test_retrieval_recall_on_known_similarities():
    eye = torch.eye(4)
    perfect = retrieval_metrics(eye, eye)
    assert all(v == 1.0 for v in perfect.values())
    # pairs 0 and 1 each prefer the other's partner: wrong at rank 1, right at rank 2
    sims = torch.tensor([[0.5, 0.9, 0.1, 0.0], [0.9, 0.5, 0.0, 0.1],
                         [0.0, 0.1, 1.0, 0.2], [0.1, 0.0, 0.2, 1.0]])
    swapped = sims.T.contiguous()          # with identity image features, sim[i, j] = text_j[i]
    r = retrieval_metrics(eye, swapped, ks=(1, 2))
    assert r["image_to_text_R@1"] == 0.5 and r["image_to_text_R@2"] == 1.0
    assert r["text_to_image_R@1"] == 0.5 and r["text_to_image_R@2"] == 1.0
    # the same caption twice: either copy is a right answer
    r = retrieval_metrics(eye, swapped, captions=["a", "a", "b", "c"], ks=(1,))
    assert r["image_to_text_R@1"] == 1.0
    # an encoder that maps everything to one point retrieves nothing
    flat = retrieval_metrics(torch.ones(20, 3), torch.ones(20, 3), ks=(1, 5, 10))
    assert flat["image_to_text_R@10"] == 0.0


def test_topk_accuracy():
    logits = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    acc = topk_accuracy(logits, torch.tensor([0, 1, 2]), ks=(1, 2))
    assert acc["top1"] == pytest.approx(1 / 3) and acc["top2"] == pytest.approx(2 / 3)


class _Lookup:
    """A 'perfect' CLIP: images and texts are looked up in tables built from the ground truth."""

    def __init__(self, dim):
        self.dim, self.images, self.texts, self.vocab = dim, {}, {}, []

    def preprocess(self, im):
        return torch.tensor(list(im.convert("L").resize((8, 8)).getdata()), dtype=torch.float32)

    def tokenizer(self, texts):
        ids = []
        for t in texts:
            if t not in self.vocab:
                self.vocab.append(t)
            ids.append([self.vocab.index(t)])
        return torch.tensor(ids)

    def encode_image(self, x):
        return torch.stack([F.one_hot(torch.tensor(self.images[tuple(r.tolist())]), self.dim).float() for r in x])

    def encode_text(self, tokens):
        return torch.stack([F.one_hot(torch.tensor(self.texts(self.vocab[int(t)])), self.dim).float()
                            for t in tokens[:, 0]])


def test_evaluate_gives_full_marks_to_a_perfect_encoder_and_counts_mistakes(tmp_path):
    from PIL import Image
    import webdataset as wds
    zs = tmp_path / "zeroshot"
    synth_shapes.write_zeroshot(str(zs), per_class=3)
    captions = synth_shapes.write_tar(str(tmp_path / "retrieval-00000.tar"), 12, seed=9)
    classes = list(synth_shapes.SHAPES)
    fake = _Lookup(dim=64)
    for label, c in enumerate(classes):
        for name in os.listdir(zs / c):
            with Image.open(zs / c / name) as im:
                fake.images[tuple(fake.preprocess(im).tolist())] = label
    unique = sorted(set(captions))
    pairs = wds.DataPipeline(wds.SimpleShardList([str(tmp_path / "retrieval-00000.tar")]),
                             wds.tarfile_to_samples(), wds.decode("pil"), wds.to_tuple("jpg", "txt"))
    for im, text in pairs:
        fake.images[tuple(fake.preprocess(im).tolist())] = len(classes) + unique.index(text)

    def text_key(t):
        for i, c in enumerate(classes):
            if f" {c}" in f" {t}" and t in {s.format(c) for s in ["a photo of a {}.", "a {} on grass."]}:
                return i
        return len(classes) + unique.index(t)
    fake.texts = text_key
    res = evaluate(fake, fake.preprocess, fake.tokenizer, str(tmp_path))
    assert res["zeroshot"]["top1"] == 1.0 and res["zeroshot"]["n"] == 12
    assert res["zeroshot"]["classes"] == 4 and res["zeroshot"]["templates"] == 2
    assert res["retrieval"]["n"] == 12
    assert all(res["retrieval"][f"{d}_R@{k}"] == 1.0
               for d in ("image_to_text", "text_to_image") for k in (1, 5, 10))

    # now the encoder confuses circles with squares: those 6 of 12 images are wrong at top-1
    fake.texts = lambda t: {0: 1, 1: 0}.get(text_key(t), text_key(t))
    res = evaluate(fake, fake.preprocess, fake.tokenizer, str(tmp_path / "zeroshot"))
    assert res["zeroshot"]["top1"] == pytest.approx(0.5) and res["zeroshot"]["top5"] == 1.0
    assert "retrieval" not in res
