"""Pictures: PNG figures of what a model learned (plots, figures) and the self-contained report.html."""
