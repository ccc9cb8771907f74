"""Evidence: verdicts on the sources' claims, checked text claims, and the scorecard.

A chapter's claims cell builds a :class:`Report`, records a verdict for every CLAIMS.md id of
the chapter (:func:`compare`, :func:`equivalent`, :func:`threshold`, :func:`exact`,
:meth:`Report.not_run`) and every fixed sentence its prose says about the run
(:meth:`Report.check`), then prints it (:meth:`Report.report`). The statistics are those of
:mod:`structlab.stats`; :mod:`structlab.evidence.scorecard` collects the stored book runs' verdicts
into the book's scorecard page.

Chapters not yet converted still print the plain ``True``/``False`` lines of
:class:`structlab.claims.Claims`, whose format :meth:`Report.report` keeps for its text claims.
"""

from structlab.evidence.verdicts import (
    ALPHA,
    MIN_SEEDS,
    SEED_HEADER,
    TEXT_HEADER,
    VERDICTS,
    Report,
    Verdict,
    catalog_for,
    compare,
    equivalent,
    exact,
    load_catalog,
    parse_seed_claims,
    threshold,
    weakest,
)

__all__ = ["ALPHA", "MIN_SEEDS", "SEED_HEADER", "TEXT_HEADER", "VERDICTS", "Report", "Verdict",
           "catalog_for", "compare", "equivalent", "exact", "load_catalog", "parse_seed_claims",
           "threshold", "weakest"]
