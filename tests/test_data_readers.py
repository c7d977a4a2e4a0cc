"""Dataset readers: real files in ../shared/data (skipped when absent) and synthetic
CheXpert / MIMIC-CXR-JPG layouts in tmp_path (those datasets are credentialed / not shipped)."""

from __future__ import annotations

import csv
import gzip
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _shared import needs_shared, shared_path

from relaxclip.data.chexpert import parse_chexpert_label, read_chexpert, read_chexpert_test
from relaxclip.data.dataset import ImageLabelDataset, count_nan, group_by_study, load_image
from relaxclip.data.labels import (
    CHESTXRAY14_LABELS,
    CHEXPERT_COMPETITION_LABELS,
    CHEXPERT_LABELS,
    OPENI_LABELS,
    check_labels,
)
from relaxclip.data.mimic import read_mimic_cxr
from relaxclip.data.nih import read_chestxray14
from relaxclip.data.openi_labels import join_openi, read_openi_labels
from relaxclip.metrics import macro_auroc

NIH = shared_path("nih_cxr14")
NIH_CSV = NIH / "Data_Entry_2017_v2020.csv.gz"
OPENI_CSV = shared_path("negbio/openi_gld_std14.csv")
OPENI_TGZ = shared_path("iu_xray/NLMCXR_reports.tgz")

needs_nih = needs_shared("nih_cxr14/Data_Entry_2017_v2020.csv.gz")
needs_openi = needs_shared("negbio/openi_gld_std14.csv")


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_png(path: Path, value: int, size: int = 8) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, dtype=np.uint8), mode="L").save(path)


# --------------------------------------------------------------------------- label constants


def test_label_constants() -> None:
    assert len(CHEXPERT_LABELS) == 14 and len(set(CHEXPERT_LABELS)) == 14
    assert set(CHEXPERT_COMPETITION_LABELS) <= set(CHEXPERT_LABELS)
    assert len(CHESTXRAY14_LABELS) == 14 and OPENI_LABELS[-1] == "normal"
    assert check_labels(["Edema", "Fracture"], CHEXPERT_LABELS, what="x") == ("Edema", "Fracture")
    with pytest.raises(ValueError, match="unknown x"):
        check_labels(["Edemaa"], CHEXPERT_LABELS, what="x")
    with pytest.raises(ValueError, match="duplicated"):
        check_labels(["Edema", "Edema"], CHEXPERT_LABELS, what="x")
    with pytest.raises(TypeError):
        check_labels("Edema", CHEXPERT_LABELS, what="x")


# --------------------------------------------------------------------------- ChestX-ray14 (real)


@needs_nih
def test_chestxray14_full_table_counts() -> None:
    records = read_chestxray14(NIH_CSV, labels=[*CHESTXRAY14_LABELS, "No Finding"])
    assert len(records) == 112_120
    # independent count straight from the text of the 'Finding Labels' column
    with gzip.open(NIH_CSV, "rt", newline="") as fh:
        rows = list(csv.DictReader(fh))
    labels = np.stack([r["labels"] for r in records])
    for j, name in enumerate([*CHESTXRAY14_LABELS, "No Finding"]):
        expected = sum(name in row["Finding Labels"].split("|") for row in rows)
        assert labels[:, j].sum() == expected, name
    assert [r["image_index"] for r in records] == [row["Image Index"] for row in rows]
    assert not np.isnan(labels).any()
    # every image has at least one finding or "No Finding", never both
    assert (labels[:, -1] == (labels[:, :-1].sum(axis=1) == 0)).all()


@needs_nih
def test_chestxray14_two_real_images_and_dataset() -> None:
    pytest.importorskip("PIL")
    names = ["00000001_000.png", "00027426_000.png"]
    records = read_chestxray14(NIH_CSV, NIH, images=names, labels=["Cardiomegaly", "No Finding"])
    with open(NIH / "sample_images_labels.csv", newline="") as fh:
        sample = {r["Image Index"]: r["Finding Labels"] for r in csv.DictReader(fh)}
    assert [r["image_index"] for r in records] == names
    for rec in records:
        expected = sample[rec["image_index"]]
        assert rec["labels"].tolist() == [
            float(expected == "Cardiomegaly"),
            float(expected == "No Finding"),
        ]
        assert rec["image_path"].is_file()
    gray = ImageLabelDataset(records, mode="L")
    image, target = gray[0]
    assert image.shape == (1, 512, 512) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) < float(image.max()) <= 1.0
    assert target.tolist() == [1.0, 0.0]
    rgb = ImageLabelDataset(records, transform=lambda im: torch.tensor(im.size), mode="RGB")
    assert rgb[1][0].tolist() == [512, 512]
    assert len(rgb) == 2
    loader = torch.utils.data.DataLoader(gray, batch_size=2)
    batch_images, batch_labels = next(iter(loader))
    assert batch_images.shape == (2, 1, 512, 512) and batch_labels.shape == (2, 2)


@needs_nih
def test_chestxray14_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="'Image Index'"):
        read_chestxray14(NIH_CSV, NIH)  # only two of the 112,120 images are present
    with pytest.raises(ValueError, match="not in column 'Image Index'"):
        read_chestxray14(NIH_CSV, images=["nope.png"])
    with pytest.raises(ValueError, match="unknown ChestX-ray14 labels"):
        read_chestxray14(NIH_CSV, labels=["Effusions"])
    bad = write_csv(
        tmp_path / "entry.csv",
        ["Image Index", "Finding Labels", "Patient ID"],
        [["a.png", "Cardiomegaly|Pleural Effusion", "1"]],
    )
    with pytest.raises(
        ValueError, match=r"entry.csv line 2, column 'Finding Labels'.*Pleural Effusion"
    ):
        read_chestxray14(bad)
    no_col = write_csv(tmp_path / "nocol.csv", ["Image Index", "Patient ID"], [["a.png", "1"]])
    with pytest.raises(ValueError, match=r"nocol.csv: missing column\(s\) \['Finding Labels'\]"):
        read_chestxray14(no_col)
    both = write_csv(
        tmp_path / "both.csv",
        ["Image Index", "Finding Labels", "Patient ID"],
        [["a.png", "No Finding|Mass", "1"]],
    )
    with pytest.raises(ValueError, match="'No Finding' together"):
        read_chestxray14(both)
    with pytest.raises(FileNotFoundError, match="csv_path"):
        read_chestxray14(tmp_path / "absent.csv")


def test_image_loading_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image(tmp_path / "none.png")
    with pytest.raises(ValueError, match="missing image path"):
        ImageLabelDataset([{"labels": [1.0]}])
    with pytest.raises(ValueError, match="expected 2"):
        ImageLabelDataset(
            [{"image_path": "a", "labels": [1.0, 0.0]}, {"image_path": "b", "labels": [1.0]}]
        )


# --------------------------------------------------------------------------- Open-I (real)


@needs_openi
def test_openi_labels_real_file() -> None:
    records = read_openi_labels(OPENI_CSV)
    assert len(records) == 3851
    assert records[0]["uid"] == "CXR1" and records[0]["label_names"] == OPENI_LABELS
    y = np.stack([r["labels"] for r in records])
    with open(OPENI_CSV, newline="") as fh:
        raw = list(csv.DictReader(fh))
    for j, name in enumerate(OPENI_LABELS):
        assert y[:, j].sum() == sum(int(r[name]) for r in raw)
    hernia = OPENI_LABELS.index("Hernia")
    assert y[:, hernia].sum() == 0  # the real single-class label
    scores = np.random.default_rng(0).random(y.shape)
    res = macro_auroc(y, scores, OPENI_LABELS)
    assert "Hernia" in res.skipped and math.isnan(res.per_label["Hernia"])
    assert len(res.labels_used) == 14
    only = read_openi_labels(OPENI_CSV, labels=["normal", "Edema"])
    assert only[0]["labels"].tolist() == [1.0, 0.0]


@needs_shared("negbio/openi_gld_std14.csv", "iu_xray/NLMCXR_reports.tgz")
def test_openi_join_with_reports() -> None:
    openi = pytest.importorskip("relaxclip.data.openi")
    reports = openi.read_openi_reports(OPENI_TGZ)
    joined = join_openi(read_openi_labels(OPENI_CSV), reports)
    assert len(joined.records) == 3851
    assert joined.labels_without_report == ()
    assert len(joined.reports_without_labels) == len(reports) - 3851
    first = joined.records[0]
    assert first["uid"] == "CXR1" and "findings" in first and first["labels"][-1] == 1.0


def test_openi_join_and_label_errors(tmp_path: Path) -> None:
    labels = [{"uid": "CXR1", "labels": np.zeros(2)}, {"uid": "CXR2", "labels": np.ones(2)}]
    reports = [{"uid": "CXR2", "findings": "x"}, {"uid": "CXR3", "findings": "y"}]
    with pytest.raises(ValueError, match="1 uid"):
        join_openi(labels, reports)
    j = join_openi(labels, reports, missing="report")
    assert [r["uid"] for r in j.records] == ["CXR2"]
    assert j.labels_without_report == ("CXR1",) and j.reports_without_labels == ("CXR3",)
    with pytest.raises(ValueError, match="appears twice"):
        join_openi(labels, [*reports, {"uid": "CXR2"}])
    header = ["filename", *OPENI_LABELS]
    bad = write_csv(tmp_path / "gold.csv", header, [["CXR1", *(["0"] * 14), "2"]])
    with pytest.raises(ValueError, match=r"gold.csv line 2, column 'normal'"):
        read_openi_labels(bad)
    short = write_csv(tmp_path / "short.csv", header[:-1], [["CXR1", *(["0"] * 14)]])
    with pytest.raises(ValueError, match=r"short.csv: missing column\(s\) \['normal'\]"):
        read_openi_labels(short)


# --------------------------------------------------------------------------- CheXpert (synthetic)

CX_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS]


def chexpert_tree(tmp_path: Path) -> Path:
    """CheXpert-v1.0-small/train.csv with 3 images of 2 studies (empty image files)."""
    root = tmp_path / "CheXpert-v1.0-small"
    rows = []
    specs = [
        (
            "patient00001/study1/view1_frontal.jpg",
            "Frontal",
            {"Edema": "1.0", "Cardiomegaly": "-1.0"},
        ),
        (
            "patient00001/study1/view2_lateral.jpg",
            "Lateral",
            {"Edema": "1.0", "Cardiomegaly": "-1.0"},
        ),
        ("patient00002/study3/view1_frontal.jpg", "Frontal", {"No Finding": "1.0", "Edema": "0.0"}),
    ]
    for rel, view, labels in specs:
        path = f"CheXpert-v1.0-small/train/{rel}"
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"")
        rows.append(
            [path, "Female", "60", view, "AP" if view == "Frontal" else ""]
            + [labels.get(c, "") for c in CHEXPERT_LABELS]
        )
    return write_csv(root / "train.csv", CX_HEADER, rows)


def test_chexpert_uncertainty_policies(tmp_path: Path) -> None:
    csv_path = chexpert_tree(tmp_path)
    i_edema, i_card = CHEXPERT_LABELS.index("Edema"), CHEXPERT_LABELS.index("Cardiomegaly")
    for policy, expected in [("ignore", math.nan), ("ones", 1.0), ("zeros", 0.0)]:
        recs = read_chexpert(csv_path, uncertainty=policy)  # type: ignore[arg-type]
        assert len(recs) == 3
        v = recs[0]["labels"]
        assert v[i_edema] == 1.0
        assert (math.isnan(v[i_card]) and math.isnan(expected)) or v[i_card] == expected
        assert math.isnan(v[CHEXPERT_LABELS.index("Fracture")])  # blank = unmentioned
        assert recs[2]["labels"][i_edema] == 0.0
    rec = read_chexpert(csv_path)[0]
    assert rec["patient_id"] == "patient00001" and rec["study_id"] == "patient00001/study1"
    assert (
        rec["image_path"]
        == tmp_path / "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"
    )
    assert rec["view"] == "Frontal" and rec["report"] is None
    assert [r["view"] for r in read_chexpert(csv_path, frontal_only=True)] == ["Frontal", "Frontal"]
    sub = read_chexpert(csv_path, labels=["Edema", "Cardiomegaly"], uncertainty="ones")
    assert sub[0]["labels"].tolist() == [1.0, 1.0] and sub[0]["label_names"] == (
        "Edema",
        "Cardiomegaly",
    )
    assert count_nan(sub) == {"Edema": 0, "Cardiomegaly": 1}
    studies = group_by_study(read_chexpert(csv_path))
    assert [s["study_id"] for s in studies] == ["patient00001/study1", "patient00002/study3"]
    assert len(studies[0]["image_paths"]) == 2 and len(studies[1]["image_paths"]) == 1


def test_chexpert_errors(tmp_path: Path) -> None:
    csv_path = chexpert_tree(tmp_path)
    with pytest.raises(ValueError, match="uncertainty"):
        read_chexpert(csv_path, uncertainty="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown CheXpert labels"):
        read_chexpert(csv_path, labels=["Effusion"])
    with pytest.raises(FileNotFoundError, match=r"train.csv: 3 path\(s\) in column 'Path'"):
        read_chexpert(csv_path, image_root=tmp_path / "CheXpert-v1.0-small")
    assert (
        len(read_chexpert(csv_path, image_root=tmp_path / "CheXpert-v1.0-small", check_paths=False))
        == 3
    )
    rows = list(csv.reader(csv_path.open()))
    rows[2][CX_HEADER.index("Edema")] = "2"
    bad = write_csv(tmp_path / "CheXpert-v1.0-small" / "bad.csv", rows[0], rows[1:])
    with pytest.raises(ValueError, match=r"bad.csv line 3, column 'Edema'"):
        read_chexpert(bad)
    no_edema = write_csv(
        tmp_path / "CheXpert-v1.0-small" / "noedema.csv",
        [c for c in rows[0] if c != "Edema"],
        [[v for c, v in zip(rows[0], r, strict=True) if c != "Edema"] for r in rows[1:]],
    )
    with pytest.raises(ValueError, match=r"noedema.csv: missing column\(s\) \['Edema'\]"):
        read_chexpert(no_edema)
    assert parse_chexpert_label(" -1 ", "zeros") == 0.0
    with pytest.raises(ValueError, match="somewhere"):
        parse_chexpert_label("yes", "ignore", where="somewhere")


def test_chexpert_test_layouts(tmp_path: Path) -> None:
    root = tmp_path / "CheXpert"
    labels = list(CHEXPERT_LABELS[::-1])  # the reader selects by name, not position
    rows = []
    for p, n_views in [(64741, 1), (64742, 2)]:
        study = f"test/patient{p}/study1"
        for v in range(n_views):
            (root / study).mkdir(parents=True, exist_ok=True)
            (root / study / f"view{v + 1}_frontal.jpg").write_bytes(b"")
        rows.append([study, *[str((p + j) % 2) for j in range(len(labels))]])
    gt = write_csv(tmp_path / "groundtruth.csv", ["Study", *labels], rows)
    recs = read_chexpert_test(gt, root)
    assert [r["study_id"] for r in recs] == ["patient64741/study1", "patient64742/study1"]
    assert [len(r["image_paths"]) for r in recs] == [1, 2]
    j = CHEXPERT_LABELS.index("Edema")
    assert recs[0]["labels"][j] == float((64741 + labels.index("Edema")) % 2)
    assert not np.isnan(np.stack([r["labels"] for r in recs])).any()
    rows.append(["test/patient64743/study1", *["0"] * len(labels)])
    gt2 = write_csv(tmp_path / "gt2.csv", ["Study", *labels], rows)
    with pytest.raises(FileNotFoundError, match=r"gt2.csv: 1 path\(s\) in column 'Study'"):
        read_chexpert_test(gt2, root)
    # image-level CSV with a Path column: grouped into studies
    img_rows = [
        ["test/patient64742/study1/view1_frontal.jpg", *["1"] * 14],
        ["test/patient64742/study1/view2_frontal.jpg", *["1"] * 14],
    ]
    img_csv = write_csv(tmp_path / "test_labels.csv", ["Path", *CHEXPERT_LABELS], img_rows)
    grouped = read_chexpert_test(img_csv, root)
    assert len(grouped) == 1 and len(grouped[0]["image_paths"]) == 2
    img_rows[1][5] = "0"
    conflict = write_csv(tmp_path / "conflict.csv", ["Path", *CHEXPERT_LABELS], img_rows)
    with pytest.raises(
        ValueError, match=r"conflict.csv line 3: study 'patient64742/study1' has other labels"
    ):
        read_chexpert_test(conflict, root)


# --------------------------------------------------------------------------- MIMIC (synthetic)

REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 FINDINGS:  There is a small left pleural effusion.  No pneumothorax.

 IMPRESSION:  Small left effusion.
"""


def mimic_tree(tmp_path: Path) -> tuple[Path, Path]:
    root, reports = tmp_path / "mimic-cxr-jpg", tmp_path / "mimic-cxr"
    images = [  # dicom, subject, study, view, split
        ("d1", "10000032", "50414267", "PA", "train"),
        ("d2", "10000032", "50414267", "LATERAL", "train"),
        ("d3", "10000764", "57375967", "AP", "test"),
        ("d4", "11000001", "51111111", "AP", "validate"),  # no label row
    ]
    write_csv(
        root / "mimic-cxr-2.0.0-metadata.csv.gz",
        ["dicom_id", "subject_id", "study_id", "ViewPosition"],
        [[d, s, st, v] for d, s, st, v, _ in images],
    )
    write_csv(
        root / "mimic-cxr-2.0.0-split.csv",
        ["dicom_id", "study_id", "subject_id", "split"],
        [[d, st, s, sp] for d, s, st, _, sp in images],
    )
    lab = {c: "" for c in CHEXPERT_LABELS}
    r1 = dict(lab, **{"Pleural Effusion": "1.0", "Pneumothorax": "0.0", "Edema": "-1.0"})
    r2 = dict(lab, **{"No Finding": "1.0"})
    write_csv(
        root / "mimic-cxr-2.0.0-chexpert.csv",
        ["subject_id", "study_id", *CHEXPERT_LABELS],
        [["10000032", "50414267", *r1.values()], ["10000764", "57375967", *r2.values()]],
    )
    for d, s, st, _, _ in images:
        p = root / "files" / f"p{s[:2]}" / f"p{s}" / f"s{st}" / f"{d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
        rp = reports / "files" / f"p{s[:2]}" / f"p{s}" / f"s{st}.txt"
        rp.parent.mkdir(parents=True, exist_ok=True)
        rp.write_text(REPORT if st == "50414267" else "FINDINGS: Normal chest.\n", encoding="utf-8")
    return root, reports


def test_mimic_reader(tmp_path: Path) -> None:
    root, reports = mimic_tree(tmp_path)
    recs = read_mimic_cxr(root)
    assert [r["dicom_id"] for r in recs] == ["d1", "d2", "d3", "d4"]
    assert recs[0]["image_path"] == root / "files/p10/p10000032/s50414267/d1.jpg"
    eff = CHEXPERT_LABELS.index("Pleural Effusion")
    assert recs[0]["labels"][eff] == 1.0 and math.isnan(
        recs[0]["labels"][CHEXPERT_LABELS.index("Edema")]
    )
    assert recs[3]["has_labels"] is False and np.isnan(recs[3]["labels"]).all()
    assert recs[0]["report"] is None
    assert [r["dicom_id"] for r in read_mimic_cxr(root, split="test")] == ["d3"]
    assert [
        r["dicom_id"] for r in read_mimic_cxr(root, split=["train", "validate"], views={"PA", "AP"})
    ] == ["d1", "d4"]
    ones = read_mimic_cxr(root, uncertainty="ones", labels=["Edema"])
    assert ones[0]["labels"].tolist() == [1.0]
    with_reports = read_mimic_cxr(root, reports_root=reports)
    from relaxclip.sentences import parse_report_sections

    assert with_reports[0]["report"] == REPORT
    assert with_reports[0]["report_sections"] == parse_report_sections(REPORT)
    assert "effusion" in with_reports[0]["report_sections"].get("findings", "").lower()
    studies = group_by_study(with_reports)
    assert [len(s["image_paths"]) for s in studies] == [2, 1, 1]
    assert studies[0]["report"] == REPORT


def test_mimic_errors(tmp_path: Path) -> None:
    root, reports = mimic_tree(tmp_path)
    with pytest.raises(ValueError, match="split"):
        read_mimic_cxr(root, split="val")
    (root / "files/p10/p10000032/s50414267/d2.jpg").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"metadata.csv.gz: 1 image\(s\) in column 'dicom_id'"
    ):
        read_mimic_cxr(root)
    assert len(read_mimic_cxr(root, check_paths=False)) == 4
    (reports / "files/p10/p10000764/s57375967.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 report\(s\) in column 'study_id'"):
        read_mimic_cxr(root, reports_root=reports, views={"AP"})
    lenient = read_mimic_cxr(root, reports_root=reports, views={"AP"}, check_paths=False)
    assert lenient[0]["report"] is None and lenient[1]["report"] is not None
    write_csv(root / "mimic-cxr-2.0.0-split.csv", ["dicom_id", "split"], [["d1", "train"]])
    with pytest.raises(ValueError, match=r"split.csv: 3 dicom_id\(s\)"):
        read_mimic_cxr(root, check_paths=False)
    write_csv(root / "mimic-cxr-2.0.0-split.csv", ["dicom_id", "fold"], [["d1", "train"]])
    with pytest.raises(ValueError, match=r"missing column\(s\) \['split'\]"):
        read_mimic_cxr(root, check_paths=False)
    (root / "mimic-cxr-2.0.0-chexpert.csv").unlink()
    with pytest.raises(FileNotFoundError, match="mimic-cxr-2.0.0-chexpert.csv.gz"):
        read_mimic_cxr(root, check_paths=False)


@pytest.mark.parametrize(
    ("ids", "column", "given"),
    [(("10000032", "s50414267"), "study_id", "s50414267"), (("p1", "x"), "subject_id", "p1")],
)
def test_mimic_non_numeric_id_names_line_and_column(
    tmp_path: Path, ids: tuple[str, str], column: str, given: str
) -> None:
    root, _ = mimic_tree(tmp_path)
    header = ["subject_id", "study_id", *CHEXPERT_LABELS]
    write_csv(root / "mimic-cxr-2.0.0-chexpert.csv", header, [[*ids, *([""] * 14)]])
    expected = rf"chexpert.csv line 2, column '{column}': expected a numeric id, got '{given}'"
    with pytest.raises(ValueError, match=expected):
        read_mimic_cxr(root, check_paths=False)


def test_dataset_study_records_load_lists(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    write_png(a, 0)
    write_png(b, 255)
    ds = ImageLabelDataset(
        [{"image_paths": [a, b], "labels": np.array([np.nan, 1.0])}],
        image_key="image_paths",
        mode="L",
    )
    images, labels = ds[0]
    assert [float(x.mean()) for x in images] == [0.0, 1.0]
    assert math.isnan(labels[0]) and labels[1] == 1.0


def test_dataset_dict_items_for_the_sampler(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    write_png(a, 0)
    write_png(b, 255)
    records = [
        {"image_paths": [b, a], "labels": np.array([0.0, 1.0]), "report": "FINDINGS: Clear."},
        {"image_paths": [a], "labels": np.array([1.0, 0.0]), "report": None},
    ]
    kw: dict[str, Any] = {"image_key": "image_paths", "mode": "L", "first_image": True}
    first = ImageLabelDataset(records[:1], as_dict=True, **kw)[0]
    assert set(first) == {"image", "labels", "report"} and first["report"] == "FINDINGS: Clear."
    assert float(first["image"].mean()) == 1.0  # the study's first image only
    second = ImageLabelDataset(records[1:], as_dict=True, **kw)[0]
    assert set(second) == {"image", "labels"}  # no report key when no record has one
    assert second["labels"].tolist() == [1.0, 0.0]


def test_count_nan_any_label_container() -> None:
    nan = float("nan")
    records = [
        {"labels": np.array([nan, 1.0], dtype=np.float32)},
        {"labels": torch.tensor([nan, nan])},
        {"labels": [0.0, nan]},
    ]
    assert count_nan(records) == {"label_0": 2, "label_1": 2}


# ------------------------------------------- readers that quietly returned less (issue 13 item 8)


def test_chexpert_frontal_only_is_case_insensitive(tmp_path: Path) -> None:
    """Before: rows spelt ``frontal`` were dropped by frontal_only=True (``[]`` here)."""
    rows = list(csv.reader(chexpert_tree(tmp_path).open()))
    view = CX_HEADER.index("Frontal/Lateral")
    for r, spelling in zip(rows[1:], ["frontal", "LATERAL", "FRONTAL"], strict=True):
        r[view] = spelling
    lower = write_csv(tmp_path / "CheXpert-v1.0-small" / "lower.csv", rows[0], rows[1:])
    kept = read_chexpert(lower, frontal_only=True)
    assert [r["view"] for r in kept] == ["frontal", "FRONTAL"]  # value kept as written
    for r in rows[1:]:
        r[view] = "Lateral"
    lateral = write_csv(tmp_path / "CheXpert-v1.0-small" / "lateral.csv", rows[0], rows[1:])
    with pytest.raises(ValueError, match=r"frontal_only=True kept none of the 3 rows.*'Lateral'"):
        read_chexpert(lateral, frontal_only=True)


def _header_only(tmp_path: Path, name: str, header: Sequence[str]) -> Path:
    return write_csv(tmp_path / name, header, [])


@pytest.mark.parametrize(
    "reader, header",
    [
        (read_chexpert, CX_HEADER),
        (read_chestxray14, ["Image Index", "Finding Labels", "Patient ID"]),
        (read_openi_labels, ["filename", *OPENI_LABELS]),
    ],
    ids=["chexpert", "chestxray14", "openi_labels"],
)
def test_header_only_csv_says_why(tmp_path: Path, reader: Any, header: list[str]) -> None:
    """Before: a CSV with a header and no row returned ``[]`` without a word."""
    path = _header_only(tmp_path, "only_header.csv", header)
    with pytest.raises(ValueError, match=r"only_header.csv: .*header but no data row"):
        reader(path)


def test_mimic_header_only_split_table_says_why(tmp_path: Path) -> None:
    root, _ = mimic_tree(tmp_path)
    write_csv(root / "mimic-cxr-2.0.0-split.csv", ["dicom_id", "split"], [])
    with pytest.raises(ValueError, match=r"split.csv: .*header but no data row"):
        read_mimic_cxr(root, check_paths=False)


def test_mimic_filters_that_keep_nothing_say_why(tmp_path: Path) -> None:
    """Before: ``views={"LL"}`` returned ``[]``; now the error lists the views present. The
    ``views`` filter is case-insensitive (before: ``"pa"`` matched nothing)."""
    root, _ = mimic_tree(tmp_path)
    assert [r["dicom_id"] for r in read_mimic_cxr(root, views={"pa", "Lateral"})] == ["d1", "d2"]
    with pytest.raises(ValueError, match=r"kept none of its 4 images.*'LATERAL'"):
        read_mimic_cxr(root, views={"LL"})


def test_duplicate_rows_and_columns_raise(tmp_path: Path) -> None:
    """Before: each of these was accepted, the last duplicate silently winning."""
    nih_header = ["Image Index", "Finding Labels", "Patient ID"]
    nih = write_csv(
        tmp_path / "nih.csv",
        nih_header,
        [["a.png", "Edema", "1"], ["b.png", "No Finding", "2"], ["a.png", "Mass", "1"]],
    )
    with pytest.raises(ValueError, match=r"nih.csv line 4: 'Image Index' 'a.png' .* line 2"):
        read_chestxray14(nih)
    root, _ = mimic_tree(tmp_path)
    write_csv(
        root / "mimic-cxr-2.0.0-split.csv",
        ["dicom_id", "split"],
        [["d1", "train"], ["d2", "train"], ["d3", "test"], ["d4", "validate"], ["d1", "test"]],
    )
    with pytest.raises(ValueError, match=r"split.csv line 6: 'dicom_id' 'd1' .* line 2"):
        read_mimic_cxr(root, check_paths=False)
    dup_cols = write_csv(
        tmp_path / "dupcols.csv", ["filename", *OPENI_LABELS, "Edema"], [["CXR1", *["0"] * 16]]
    )
    with pytest.raises(ValueError, match=r"dupcols.csv: column name\(s\) \['Edema'\] appear"):
        read_openi_labels(dup_cols)


def test_mimic_report_with_a_byte_order_mark(tmp_path: Path) -> None:
    """Before: a report file starting with a BOM put FINDINGS into the preamble."""
    root, reports = mimic_tree(tmp_path)
    rp = reports / "files/p10/p10000764/s57375967.txt"
    rp.write_text("\ufeff\u200bFINDINGS: Heart is enlarged.\nIMPRESSION: No acute disease.\n")
    rec = [r for r in read_mimic_cxr(root, reports_root=reports) if r["dicom_id"] == "d3"][0]
    assert rec["report"].startswith("FINDINGS:")
    assert rec["report_sections"]["findings"] == "Heart is enlarged."


# ------------------------------------------------- unhelpful reader errors (issue 13)


def test_truncated_csv_gz_names_the_path(tmp_path: Path) -> None:
    """Before: a bare ``EOFError`` with no path."""
    full = write_csv(
        tmp_path / "full.csv.gz",
        ["Image Index", "Finding Labels", "Patient ID"],
        [[f"{i:08d}_000.png", "Edema", str(i)] for i in range(2000)],
    )
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"cut.csv.gz: truncated or corrupt gzip"):
        read_chestxray14(cut)


def test_non_utf8_csv_and_report_name_the_file(tmp_path: Path) -> None:
    """Before: a bare ``UnicodeDecodeError`` naming neither file nor encoding."""
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(
        "Image Index,Finding Labels,Patient ID\na.png,Edema,1\nb.png,Mass,Ren\xe9\n".encode(
            "latin-1"
        )
    )
    with pytest.raises(ValueError, match=r"latin1.csv: not UTF-8 text .* line 3.*expected a UTF-8"):
        read_chestxray14(latin1)
    root, reports = mimic_tree(tmp_path)
    rp = reports / "files/p10/p10000764/s57375967.txt"
    rp.write_bytes("FINDINGS: pr\xe9sence of effusion.".encode("cp1252"))
    with pytest.raises(ValueError, match=r"s57375967.txt: not UTF-8 text"):
        read_mimic_cxr(root, reports_root=reports)


def test_excel_bom_csv_just_works(tmp_path: Path) -> None:
    """Before: ``missing column(s) ['Path']`` (the BOM was part of the first column name)."""
    plain = chexpert_tree(tmp_path)
    bom = plain.with_name("excel.csv")
    bom.write_bytes(plain.read_text(encoding="utf-8").encode("utf-8-sig"))
    assert bom.read_bytes().startswith(b"\xef\xbb\xbf")
    got, want = read_chexpert(bom), read_chexpert(plain)
    assert [r["image_path"] for r in got] == [r["image_path"] for r in want]
    gz = tmp_path / "nih.csv.gz"
    gz.write_bytes(
        gzip.compress(b"\xef\xbb\xbfImage Index,Finding Labels,Patient ID\na.png,Edema,1\n")
    )
    assert read_chestxray14(gz)[0]["image_index"] == "a.png"


def test_csv_error_lines_after_blank_lines_and_multiline_fields(tmp_path: Path) -> None:
    """Before: errors counted rows (``i + 2``), so blank lines and a quoted field spanning
    lines made the reported line wrong (line 4 here for a value on line 7)."""
    header = ",".join(["filename", *OPENI_LABELS])
    good = ",".join(["0"] * 15)
    text = (
        f"{header}\n"  # line 1
        f"CXR1,{good}\n"  # line 2
        "\n"  # line 3 (blank)
        f'"CXR\n2",{good}\n'  # lines 4-5: a quoted uid with a line break
        "\n"  # line 6
        f"CXR3,{','.join(['0'] * 14)},7\n"  # line 7: bad value
    )
    path = tmp_path / "gold.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=r"gold.csv line 7, column 'normal'"):
        read_openi_labels(path)
    path.write_text(text.replace(",7\n", "\n"), encoding="utf-8")
    with pytest.raises(ValueError, match=r"gold.csv: line 7 has 15 fields, header has 16"):
        read_openi_labels(path)
    path.write_text(text.replace("CXR3", "X" * 140_000), encoding="utf-8")  # over csv's limit
    with pytest.raises(ValueError, match=r"gold.csv line 7: field larger than field limit"):
        read_openi_labels(path)


# ------------------------------------------------------- bad argument types name the argument


@pytest.mark.parametrize("flag", ["no", 1, None])
def test_reader_flags_must_be_bools(tmp_path: Path, flag: object) -> None:
    """Before: ``check_paths="no"`` / ``frontal_only="no"`` were read as True, 0 as False."""
    csv_path = chexpert_tree(tmp_path)
    root, _ = mimic_tree(tmp_path)
    nih = write_csv(
        tmp_path / "nih.csv",
        ["Image Index", "Finding Labels", "Patient ID"],
        [["a.png", "Mass", "1"]],
    )
    calls = {
        "check_paths": [
            lambda: read_chexpert(csv_path, check_paths=flag),
            lambda: read_chexpert_test(csv_path, tmp_path, check_paths=flag),
            lambda: read_mimic_cxr(root, check_paths=flag),
            lambda: read_chestxray14(nih, check_paths=flag),
        ],
        "frontal_only": [lambda: read_chexpert(csv_path, frontal_only=flag)],
        "first_image": [lambda: ImageLabelDataset([], first_image=flag)],
        "as_dict": [lambda: ImageLabelDataset([], as_dict=flag)],
    }
    for name, fns in calls.items():
        for fn in fns:
            with pytest.raises(TypeError, match=f"{name} must be True or False, got"):
                fn()


def test_reader_arguments_of_the_wrong_type_are_named(tmp_path: Path) -> None:
    """Before: ``Path(None)``, ``set(3)``, ``tuple(None)`` or ``"x".strip`` on an int raised
    errors that did not name the argument (or, for ``labels=["Edema", 3]``, called 3 a label)."""
    csv_path = chexpert_tree(tmp_path)
    root, _ = mimic_tree(tmp_path)
    nih = write_csv(
        tmp_path / "nih.csv",
        ["Image Index", "Finding Labels", "Patient ID"],
        [["a.png", "Mass", "1"]],
    )
    cases: list[tuple[Any, str]] = [
        (lambda: read_chexpert(None), "csv_path must be a path"),
        (lambda: read_chexpert(b"train.csv"), "csv_path must be a path .* got bytes"),
        (lambda: read_chexpert(csv_path, image_root=3), "image_root must be a path"),
        (lambda: read_chexpert(csv_path, labels=None), "labels must be a sequence of label names"),
        (
            lambda: read_chexpert(csv_path, labels=["Edema", 3]),
            "labels must be a sequence of label names",
        ),
        (lambda: read_chexpert_test(csv_path, None), "image_root must be a path"),
        (lambda: read_chexpert_test(csv_path, tmp_path, image_glob=3), "image_glob must be a glob"),
        (lambda: read_mimic_cxr(None), "root must be a path"),
        (lambda: read_mimic_cxr(root, reports_root=3), "reports_root must be a path"),
        (lambda: read_mimic_cxr(root, split=3), "split must be a name or an iterable of names"),
        (lambda: read_mimic_cxr(root, views=[1]), "views must be a name or an iterable of names"),
        (lambda: read_chestxray14(nih, images=3), "images must be a path or image names"),
        (lambda: read_chestxray14(nih, images=[b"a.png"]), "images must be a path or image names"),
        (lambda: read_openi_labels(3), "csv_path must be a path"),
        (lambda: join_openi(3, []), "label_records must be an iterable of record mappings"),
        (lambda: join_openi([], ["CXR1"]), r"reports\[0\] must be a record mapping"),
        (lambda: ImageLabelDataset([], mode=3), "mode must be a str"),
    ]
    for call, pattern in cases:
        with pytest.raises(TypeError, match=pattern):
            call()
    with pytest.raises(TypeError, match="uncertainty must be one of 'ignore', 'ones', 'zeros'"):
        read_chexpert(csv_path, uncertainty=["ones"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="uncertainty must be one of 'ignore', 'ones', 'zeros'"):
        read_chexpert(csv_path, uncertainty="one")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="missing must be one of 'raise', 'report'"):
        join_openi([], [], missing="drop")  # type: ignore[arg-type]


# ------------------------------------------- records the readers and the dataset let through


def test_chestxray14_strips_image_index_and_refuses_blank_cells(tmp_path: Path) -> None:
    """Before: ``images=["a.png"]`` kept nothing for a cell `` a.png`` (no error), and a blank
    ``Image Index`` or ``Patient ID`` gave a record (``image_path`` = the image root)."""
    header = ["Image Index", "Finding Labels", "Patient ID"]
    nih = write_csv(
        tmp_path / "n.csv", header, [[" a.png ", "Edema", " 1"], ["b.png", "Edema", "2"]]
    )
    recs = read_chestxray14(nih, tmp_path, images=["a.png"], check_paths=False)
    assert [(r["image_index"], r["patient_id"]) for r in recs] == [("a.png", "1")]
    assert recs[0]["image_path"] == tmp_path / "a.png"
    for row, column in [([" ", "Edema", "1"], "Image Index"), (["c", "Edema", ""], "Patient ID")]:
        bad = write_csv(tmp_path / "blank.csv", header, [["b.png", "Edema", "2"], row])
        with pytest.raises(
            ValueError, match=rf"blank.csv line 3, column '{column}': expected a non"
        ):
            read_chestxray14(bad, tmp_path, check_paths=False)


def test_dataset_dict_items_collate_with_or_without_reports(tmp_path: Path) -> None:
    """Before: a mix of records with and without a report gave items with different keys; the
    default collate dropped the reports (first item without one) or raised ``KeyError``."""
    pytest.importorskip("PIL")
    img = tmp_path / "a.png"
    write_png(img, 0)
    a = {"image_path": img, "labels": [1.0, 0.0], "report": None}
    b = {"image_path": img, "labels": [0.0, 1.0], "report": "FINDINGS: x"}
    for records in ([a, b], [b, a]):
        with pytest.raises(ValueError, match=r"records\[\d\]: report is None while records"):
            ImageLabelDataset(records, as_dict=True)
        assert len(ImageLabelDataset(records)) == 2  # (image, labels) pairs need no report
    for records, keys in [([b, b], {"image", "labels", "report"}), ([a, a], {"image", "labels"})]:
        loader = torch.utils.data.DataLoader(ImageLabelDataset(records, as_dict=True), batch_size=2)
        batch = next(iter(loader))
        assert set(batch) == keys and batch["labels"].shape == (2, 2)


def test_dataset_refuses_labels_not_1d_and_empty_image_lists(tmp_path: Path) -> None:
    """Before: scalar labels gave ``IndexError``, 2-D labels were accepted, and an empty image
    list (``read_chexpert_test(check_paths=False)`` for a missing study folder) gave ``[]`` or
    ``IndexError`` on indexing."""
    for labels, shape in [(1.0, r"\(\)"), (np.zeros((2, 2)), r"\(2, 2\)")]:
        with pytest.raises(
            ValueError, match=rf"records\[0\]\['labels'\] must be 1-D, got shape {shape}"
        ):
            ImageLabelDataset([{"image_path": "a.png", "labels": labels}])
    rec = {"image_paths": [], "labels": [1.0]}
    for first in (False, True):
        with pytest.raises(
            ValueError, match=r"records\[1\]: missing image path under key 'image_paths'"
        ):
            ImageLabelDataset(
                [{**rec, "image_paths": ["a.png"]}, rec], image_key="image_paths", first_image=first
            )


def test_chexpert_duplicate_and_padded_paths(tmp_path: Path) -> None:
    """Before: two rows with one ``Path`` were both kept, and a trailing space stayed in
    ``image_path``."""
    csv_path = chexpert_tree(tmp_path)
    rows = list(csv.reader(csv_path.open()))
    rows[3][0] += " "
    padded = write_csv(csv_path.parent / "padded.csv", rows[0], rows[1:])
    recs = read_chexpert(padded)  # check_paths: the stripped path exists
    assert str(recs[2]["image_path"]).endswith("patient00002/study3/view1_frontal.jpg")
    dup = write_csv(
        csv_path.parent / "dup.csv", rows[0], [*rows[1:], [rows[1][0] + " ", *rows[3][1:]]]
    )
    with pytest.raises(
        ValueError, match=r"dup.csv line 5: 'Path' '.*view1_frontal.jpg' already appears at line 2"
    ):
        read_chexpert(dup)


def test_blank_lines_before_the_csv_header_are_skipped(tmp_path: Path) -> None:
    """Before: "missing column(s) [...]; header is []" although blank lines are skipped."""
    path = tmp_path / "gold.csv"
    path.write_text(
        "\n\n" + ",".join(["filename", *OPENI_LABELS]) + "\nCXR1," + ",".join(["0"] * 14) + ",7\n"
    )
    with pytest.raises(ValueError, match=r"gold.csv line 4, column 'normal'"):
        read_openi_labels(path)
    path.write_text(path.read_text().replace(",7\n", ",1\n"))
    assert [r["uid"] for r in read_openi_labels(path)] == ["CXR1"]
    path.write_text("\n\n")
    with pytest.raises(ValueError, match="gold.csv: empty file, expected a CSV header"):
        read_openi_labels(path)


def test_duplicate_studies_name_both_lines(tmp_path: Path) -> None:
    """Before: a repeated ``Study`` (CheXpert test set) or study (MIMIC labels) named only the
    second line, and images of one study with different labels named ``records[1]``, not the
    file."""
    root = tmp_path / "CheXpert"
    (root / "test/patient1/study1").mkdir(parents=True)
    (root / "test/patient1/study1/view1_frontal.jpg").write_bytes(b"")
    study = ["test/patient1/study1", *["0"] * 14]
    gt = write_csv(
        tmp_path / "gt.csv", ["Study", *CHEXPERT_LABELS], [study, study[:1] + ["1"] * 14, study]
    )
    with pytest.raises(
        ValueError, match=r"gt.csv line 3: study 'patient1/study1' .* already appears at line 2"
    ):
        read_chexpert_test(gt, root)
    rows = [[f"{study[0]}/view{v}_frontal.jpg", *["0"] * 14] for v in (1, 2, 3)]
    rows[2][5] = "1"
    img_csv = write_csv(tmp_path / "img.csv", ["Path", *CHEXPERT_LABELS], rows)
    with pytest.raises(
        ValueError, match=r"img.csv line 4: study 'patient1/study1' has other labels than at line 2"
    ):
        read_chexpert_test(img_csv, root, check_paths=False)
    mimic, _ = mimic_tree(tmp_path)
    lab = mimic / "mimic-cxr-2.0.0-chexpert.csv"
    rows = list(csv.reader(lab.open()))
    write_csv(lab, rows[0], [*rows[1:], rows[1]])
    with pytest.raises(
        ValueError,
        match=r"chexpert.csv line 4: study 50414267 of subject 10000032 already appears at line 2",
    ):
        read_mimic_cxr(mimic, check_paths=False)
