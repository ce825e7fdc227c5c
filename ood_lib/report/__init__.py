"""Reporting: the scorecard, the at-a-glance page, chapter tables and figures."""
