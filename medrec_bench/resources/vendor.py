"""Rebuild the vendored resource tables in ``resources/files`` from the public tables in ``../shared/data``.

Run ``python -m medrec_bench.resources.vendor --shared ../shared/data`` after the shared tables change. The output is
deterministic (sorted rows, gzip without timestamps) so ``SHA256SUMS`` only changes when the content does, and
``tests/test_resources.py`` checks that a rebuild reproduces the committed files byte for byte.

Every table here is drug- or code-level public reference data; nothing is patient-level.
"""

from __future__ import annotations

import argparse
import ast
import csv
import gzip
import hashlib
import io
import json
import zipfile
from pathlib import Path

FILES_DIR = Path(__file__).with_name("files")

#: name of each vendored file -> (source path under shared/data, licence line)
SOURCES: dict[str, tuple[str, str]] = {
    "ndc_rxcui.csv.gz": ("gamenet/ndc2rxnorm_mapping.txt", "MIT (sjy1203/GAMENet)"),
    "rxcui_atc4.csv.gz": ("carmen/ndc2atc_level4.zip", "no licence stated (bit1029public/Carmen); derived subset"),
    "ddi_atc3_pairs.csv": ("gamenet/ddi_A_final_pairs.csv", "MIT (sjy1203/GAMENet), TWOSIDES-derived"),
    "atc3_smiles.json": ("molerec/idx2SMILES.json", "MIT (yangnianzu0515/MoleRec)"),
    "atc_names.csv": ("who-atc/atc_classes_2021-12-03.csv", "WHOCC ATC/DDD index, non-commercial (CC BY-NC-SA 4.0 scrape)"),
    "icd9_diagnoses.csv.gz": ("mimic-iii-demo-1.4/D_ICD_DIAGNOSES.csv", "ODbL v1.0 (MIMIC-III demo dictionary)"),
    "icd9_procedures.csv.gz": ("mimic-iii-demo-1.4/D_ICD_PROCEDURES.csv", "ODbL v1.0 (MIMIC-III demo dictionary)"),
}


def parse_dict_literal(text: str) -> dict[str, str]:
    """Parse a Python dict literal of str -> str safely (``ast.literal_eval``, never ``eval``)."""
    value = ast.literal_eval(text.strip())
    if not isinstance(value, dict):
        raise ValueError("expected a dict literal")
    return {str(k): str(v) for k, v in value.items()}


def _csv_bytes(header: list[str], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode()


def _gzip(data: bytes) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=9) as fh:
        fh.write(data)
    return out.getvalue()


def build_tables(shared: Path) -> dict[str, bytes]:
    """Return the bytes of every vendored file, built from the shared data folder."""
    out: dict[str, bytes] = {}
    ndc_rx = parse_dict_literal((shared / SOURCES["ndc_rxcui.csv.gz"][0]).read_text())
    out["ndc_rxcui.csv.gz"] = _gzip(_csv_bytes(["ndc", "rxcui"], sorted([k, v] for k, v in ndc_rx.items())))

    # RXCUI -> ATC4: first occurrence in file order, as the GAMENet pipeline's drop_duplicates(subset=RXCUI) keeps.
    wanted = {v for v in ndc_rx.values() if v}
    rx_atc: dict[str, str] = {}
    with zipfile.ZipFile(shared / SOURCES["rxcui_atc4.csv.gz"][0]) as zf:
        with zf.open("ndc2atc_level4.csv") as fh:
            reader = csv.DictReader(io.TextIOWrapper(fh, encoding="utf-8"))
            for row in reader:
                rx = row["RXCUI"]
                if rx in wanted and rx not in rx_atc:
                    rx_atc[rx] = row["ATC5"]  # the header says ATC5 but the values are 5-character level-4 codes
    out["rxcui_atc4.csv.gz"] = _gzip(_csv_bytes(["rxcui", "atc4"], sorted([k, v] for k, v in rx_atc.items())))

    with open(shared / SOURCES["ddi_atc3_pairs.csv"][0], newline="") as fh:
        pairs = {tuple(sorted((r["atc_i"], r["atc_j"]))) for r in csv.DictReader(fh)}
    out["ddi_atc3_pairs.csv"] = _csv_bytes(["atc_i", "atc_j"], [list(p) for p in sorted(pairs)])

    smiles = json.loads((shared / SOURCES["atc3_smiles.json"][0]).read_text())
    smiles = {k: sorted(set(v)) for k, v in sorted(smiles.items())}
    out["atc3_smiles.json"] = (json.dumps(smiles, indent=1, sort_keys=True) + "\n").encode()

    with open(shared / SOURCES["atc_names.csv"][0], newline="", encoding="utf-8") as fh:
        rows = [[r["atc_code"], r["level"], r["atc_name"]] for r in csv.DictReader(fh)]
    out["atc_names.csv"] = _csv_bytes(["atc_code", "level", "atc_name"], sorted(rows))

    for name in ("icd9_diagnoses.csv.gz", "icd9_procedures.csv.gz"):
        with open(shared / SOURCES[name][0], newline="", encoding="utf-8") as fh:
            rows = [[r["icd9_code"], r["short_title"], r["long_title"]] for r in csv.DictReader(fh)]
        out[name] = _gzip(_csv_bytes(["icd_code", "short_title", "long_title"], sorted(rows)))
    return out


def checksums(tables: dict[str, bytes]) -> str:
    """``sha256  name`` lines, sorted by name."""
    return "".join(f"{hashlib.sha256(b).hexdigest()}  {n}\n" for n, b in sorted(tables.items()))


def write_tables(shared: Path, out_dir: Path = FILES_DIR) -> None:
    tables = build_tables(shared)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in tables.items():
        (out_dir / name).write_bytes(data)
    (out_dir / "SHA256SUMS").write_text(checksums(tables))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, required=True, help="the shared/data folder")
    args = parser.parse_args()
    write_tables(args.shared)
    print(f"wrote {len(SOURCES)} tables to {FILES_DIR}")


if __name__ == "__main__":
    main()
