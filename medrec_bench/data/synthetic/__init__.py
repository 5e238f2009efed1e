"""Embedded synthetic cohort generator: writes raw EHR tables in the MIMIC-III v1.4 or MIMIC-IV (``hosp/``) shape.

What it simulates. Each patient gets a profile (gender, age, insurance, ethnicity/race, language, religion, marital
status) and a latent set of clinical conditions. 86 hand-written conditions (34 chronic ones such as hypertension,
type 2 diabetes, heart failure, atrial fibrillation; 30 admission reasons such as sepsis, pneumonia, NSTEMI, CABG, GI
bleeding; 22 in-hospital complications such as acute kidney failure or electrolyte disorders) plus 80 weaker
"background" conditions drawn from the seed drive everything: each has real ICD-9 diagnosis codes, likely ICD-9
procedure codes and ATC3 drug classes, each with a probability. Chronic conditions persist across a patient's
admissions (same codes, mostly the same drugs); some prevalences depend on the profile (age, sex, ethnicity,
insurance). Every admission also gets "hospital routine" drugs (laxatives, electrolytes, IV solutions, analgesics,
acid suppression, heparin ...) as in real ICU data, a long tail of rare diagnosis/procedure codes and a few random
drug classes. Interacting drug pairs (``resources.ddi_pairs()``): an optional random extra that interacts is left out
80% of the time, while standard combinations of needed/routine drugs (aspirin + statin ...) are kept 95% of the time,
so the pooled DDI rate of the ATC3 sets is about 0.07 like MIMIC. Each drug class becomes 1..N prescription rows
with real NDCs of that class, on different days; like real data there are rows with NDC ``0`` or empty, NDCs that
map to no ATC class, classes without SMILES and exact duplicate rows (equal in every column but ``ROW_ID``).

What it does not simulate: ICD-10 codes (MIMIC-IV output uses ``icd_version`` 9 for every code because only ICD-9
dictionaries are vendored), lab values, notes, ICU stays or any table beyond the seven written, neonates, and the
exact code/drug frequencies of MIMIC. Drug names are ATC class names, not product names.

No real patient data: every row is drawn from random numbers. Only public reference tables are used (ICD-9 titles,
NDC -> ATC mapping, DDI pairs); the MIMIC demo was looked at for value formats only.

Deterministic: the same ``(n_patients, seed, fmt, compress)`` gives byte-identical files.

Layout: ``catalogue.toml`` (conditions, routine drugs, product families, profile value tables; read by
``catalogue.py``), ``products.py`` (the seed-independent NDC product table), ``simulate.py`` (the cohort as index
arrays, one function per step) and ``write.py`` (the MIMIC-shaped CSV tables).
"""

from .catalogue import CONDITIONS, ROUTINE_DRUGS, Condition
from .write import DEFAULT_FORMAT, DEFAULT_PATIENTS, DEFAULT_SEED, FORMATS, SyntheticFormat, write_synthetic

__all__ = ["CONDITIONS", "DEFAULT_FORMAT", "DEFAULT_PATIENTS", "DEFAULT_SEED", "FORMATS", "ROUTINE_DRUGS", "Condition",
           "SyntheticFormat", "write_synthetic"]
