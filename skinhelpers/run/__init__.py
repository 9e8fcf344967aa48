"""Stage 7, runs: the papermill pipeline behind run_all.sh, profiles, run folders and the
HTML report.
"""
