import zipfile

import pytest

from dti.tools.download import download_dreambooth, main


def fake_archive(tmp_path):
    archive = tmp_path / "dreambooth-main.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("dreambooth-main/README.md", "not the dataset")
        zf.writestr("dreambooth-main/dataset/prompts_and_classes.txt", "subject_name,class\ndog,dog\n")
        zf.writestr("dreambooth-main/dataset/dog/00.jpg", b"jpeg bytes")
        zf.writestr("dreambooth-main/dataset/cat/00.jpg", b"jpeg bytes")
    return archive.as_uri()


def test_download_extracts_only_the_dataset_folder(tmp_path):
    dest = download_dreambooth(tmp_path / "data" / "dreambooth", url=fake_archive(tmp_path))
    assert sorted(p.name for p in dest.iterdir()) == ["cat", "dog", "prompts_and_classes.txt"]
    assert (dest / "dog" / "00.jpg").read_bytes() == b"jpeg bytes"
    assert [p.name for p in dest.parent.iterdir()] == ["dreambooth"]  # no temporary files left behind


def test_failed_download_leaves_nothing(tmp_path, capsys):
    assert main(["--dest", str(tmp_path / "d"), "--url", (tmp_path / "missing.zip").as_uri()]) == 1
    assert "error: download failed" in capsys.readouterr().err
    assert not (tmp_path / "d").exists() and list(tmp_path.iterdir()) == []


def read_wandb_records(path):
    """Records of an offline .wandb file: W&B's LevelDB-style log (7-byte file header, 32 KiB blocks, chunks with a
    7-byte header: crc32 (4), length (2), type (1: full, 2: first, 3: middle, 4: last))."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, records, pending, offset = path.read_bytes(), [], b"", 7
    assert data[:4] == b":W&B"
    while offset + 7 <= len(data):
        if 32768 - offset % 32768 < 7:  # block trailer too small for a header: skip to the next block
            offset += 32768 - offset % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[offset:offset + 7])
        chunk, offset = data[offset + 7:offset + 7 + length], offset + 7 + length
        if kind == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


@pytest.mark.slow
def test_wandb_logger_runs_offline_and_records_scalars(tmp_path, monkeypatch):
    from helpers import FAST, compose_cfg

    from dti.run import job

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)  # no key configured -> offline by itself
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    run_dir = tmp_path / "outputs" / "model=tiny_sdxl" / "toy"
    done = job.run(compose_cfg([*FAST, "logger=wandb", "logger.project=dti-test", "sweep_name=grid",
                                  "stage=[train,sample,evaluate]", "prompts=complex", "evaluator=tiny",
                                  "sampler.seeds=[0]", "train.validation.enabled=true"]), run_dir)
    assert done["train"]["step"] == 4
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    records = read_wandb_records(next(runs[0].glob("*.wandb")))
    kinds = [r.WhichOneof("record_type") for r in records]
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.project == "dti-test" and run.display_name == "outputs/model=tiny_sdxl/toy"
    assert run.job_type == "train+sample+evaluate" and run.run_group == "grid"
    assert list(run.tags) == ["model=tiny_sdxl", "optimizer=RiemannianSGD", "magnitude=mean", "kappa=0.0001"]
    config_keys = {item.key for item in run.config.update} | {
        item.key for r in records if r.WhichOneof("record_type") == "config" for item in r.config.update}
    assert {"model", "optimizer", "magnitude", "kappa", "train"} <= config_keys
    history = [{i.key or "/".join(i.nested_key): i.value_json for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    assert {"train/loss", "train/clip_l/norm", "train/clip_g/cos_prior"} <= set(history[0])
    logged = {k: v for h in history for k, v in h.items()}
    assert logged["validation/_type"] == '"image-file"'  # the validation grid
    assert logged["evaluation/samples/_type"] == '"table-file"' and logged["evaluation/samples/nrows"] == "22"
    summary = {i.key or "/".join(i.nested_key) for r in records if r.WhichOneof("record_type") == "summary"
               for i in r.summary.update}
    assert {"eval/image_sim", "eval/text_sim", "eval/text_sim_official"} <= summary
    assert "exit" in kinds  # wandb.finish() ran
