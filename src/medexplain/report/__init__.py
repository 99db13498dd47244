"""Reports a person would rather look at than read: overlays, tables and plots in one self-contained page."""

from medexplain.report.build import REPORT_FILE, build_report

__all__ = ["REPORT_FILE", "build_report"]
