"""The course kit: check_function grades a student's layer function (check.py, on the inputs of cases.py,
with the hints of hints.py); grade.py grades a folder of exercise notebooks with otter-grader into a CSV.
docs/teaching.md is the module plan."""

from .check import NAMES, CheckResult, check_function

__all__ = ["NAMES", "CheckResult", "check_function"]
