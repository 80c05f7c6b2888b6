"""What a run's numbers mean for its user: the report's "What this says" notes.

The summary gives values with units; these sentences say which direction is better and, where the run
shows it, what to do next:

* the validation ELBO still rising at the last epoch (the best epoch is the last one and training was not
  stopped early): the model has not converged, train longer (``--resume --epochs``);
* no active units (every latent dimension's posterior mean constant across examples): the posterior has
  collapsed to the prior, the latent code carries nothing, and a small posterior gap is then no merit;
* the precision training used, where ``--precision auto`` chose it (run.json records the choice).
"""

from __future__ import annotations

from vaekit.viz.run_record import RunRecord, value_of

__all__ = ["advice", "DIRECTIONS"]

#: Which way each summary number is better.
DIRECTIONS = ("Higher log p(x) and ELBO are better (log-densities of the data); a smaller posterior gap means "
              "q(z|x) is closer to the true posterior p(z|x); fewer bits per dimension are better.")


def _still_improving(record: RunRecord) -> str | None:
    best, history = record.best, record.history
    asked = record.section("train").get("epochs")
    if best is None or len(history) < 2 or best[0] != len(history):
        return None
    if isinstance(asked, int) and len(history) < asked:            # stopped early (or interrupted): not this case
        return None
    more = 2 * len(history)
    return (f"The validation ELBO was still improving at the last epoch ({best[0]} of {len(history)} was the best): "
            f"the model has not converged. Train longer, e.g. vaekit train --out RUN_DIR --resume --epochs {more}.")


def _collapsed(record: RunRecord) -> str | None:
    doc = record.summary
    if not doc or value_of(doc, "active_units") != 0:
        return None
    latent = doc.get("latent_dim")
    return (f"No active units (0 of {latent}): every latent dimension's posterior stays at the prior, so z carries "
            "nothing about x (posterior collapse) and the small posterior gap is no merit. Try --kl-warmup EPOCHS "
            "or --free-bits, or a Gaussian decoder with a smaller or optimal c.")


def _precision(record: RunRecord) -> str | None:
    used = next((s.get("precision_used") for s in reversed(record.sessions) if s.get("precision_used")), None)
    if record.section("train").get("precision") != "auto" or used is None:
        return None
    why = ("this CPU computes bfloat16 products natively" if used == "bf16"
           else "no native bfloat16 products on this device")
    return (f"--precision auto trained in {used} ({why}); evaluation is always float32. "
            "--precision fp32 trains in full precision.")


def advice(record: RunRecord) -> list[str]:
    """The notes that apply to ``record``, the directions first."""
    notes = [DIRECTIONS]
    for check in (_still_improving, _collapsed, _precision):
        note = check(record)
        if note is not None:
            notes.append(note)
    return notes
