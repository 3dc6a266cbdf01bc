import zipfile

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
