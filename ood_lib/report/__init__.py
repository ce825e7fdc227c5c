"""Reporting: the saved results between chapters, the scorecard, the at-a-glance page, tables and figures."""
