"""The course kit: check_function grades a student's layer function (harvest.py runs it on the inputs of
cases.py, check.py judges the outputs, with the hints of hints.py); grade.py grades a folder of exercise
notebooks into a CSV, each notebook run by worker.py under sandbox.py. docs/teaching.md is the module plan."""

from .check import NAMES, CheckResult, check_function

__all__ = ["NAMES", "CheckResult", "check_function"]
