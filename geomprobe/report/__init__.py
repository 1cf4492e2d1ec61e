"""Reports: ``diagnose`` (why an edit works or fails, per request and form) and ``compare`` (editors side by
side).  Verdicts come from the measurements through the rules of :mod:`geomprobe.report.verdict`; the reports
are written as self-contained HTML, Markdown and JSON by :mod:`geomprobe.report.render`.  The records are typed
(:mod:`geomprobe.report.records`); what both reports share lives in :mod:`geomprobe.report.common`."""

from .compare import compare
from .diagnose import diagnose
from .records import Measurement, Run, Verdict
from .verdict import RULES, THRESHOLDS, judge

__all__ = ["Measurement", "RULES", "Run", "THRESHOLDS", "Verdict", "compare", "diagnose", "judge"]
