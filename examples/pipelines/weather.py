"""The weather example: CSV chunks -> clean (one task per file) -> aggregate -> summary.

Each station's logger writes one CSV file (data/station-*.csv); the pipeline
cleans each file in its own task (``map="chunks"``: a changed file is cleaned
again alone), aggregates daily means per station and summarises them.
The notebook weather.ipynb runs it on the site's workers and plots the result.
"""

from __future__ import annotations

import glob

import pandas as pd

from toppipe.pipeline import project_path, task
from weatherlib.cleaning import clean_frame


@task
def chunks(pattern: str = "data/station-*.csv") -> list[str]:
    """The CSV files of the project that match *pattern*, as the worker sees them."""
    found = sorted(glob.glob(project_path(pattern)))
    if not found:
        raise FileNotFoundError(f"no file matches {pattern} in the project")
    return found


@task(map="chunks")
def clean(chunks: str) -> pd.DataFrame:
    """One station's file, read and cleaned (called once per file of ``chunks``)."""
    return clean_frame(pd.read_csv(chunks))


@task
def aggregate(clean: list[pd.DataFrame]) -> pd.DataFrame:
    """Daily mean, minimum and maximum temperature per station (``clean``: the tables, in file order)."""
    readings = pd.concat(clean, ignore_index=True)
    daily = readings.groupby(["station", "day"])["temperature_c"].agg(["mean", "min", "max", "count"])
    return daily.reset_index()


@task
def summary(aggregate: pd.DataFrame) -> dict:
    """The warmest station and the overall mean, for a quick look."""
    means = aggregate.groupby("station")["mean"].mean()
    return {"stations": len(means), "warmest": str(means.idxmax()), "mean_c": round(float(means.mean()), 2)}
