"""The dataset layer: raw MIMIC-III / MIMIC-IV / synthetic tables -> a :class:`Cohort` of patients and visits."""

from .build import SOURCES, load_cohort
from .cohort import Cohort
from .errors import DataError
from .preprocess import PreprocessOptions
from .schema import Patient, Visit, Vocabularies, Vocabulary

__all__ = ["SOURCES", "Cohort", "DataError", "Patient", "PreprocessOptions", "Visit", "Vocabularies", "Vocabulary",
           "load_cohort"]
