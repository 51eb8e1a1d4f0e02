"""The weather example: CSV chunks -> clean -> aggregate -> summary.

Each station's logger writes one CSV file (data/station-*.csv); the pipeline
cleans every file, aggregates daily means per station and summarises them.
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


@task
def clean(chunks: list[str]) -> pd.DataFrame:
    """Every file read and cleaned, in one table."""
    return pd.concat([clean_frame(pd.read_csv(path)) for path in chunks], ignore_index=True)


@task
def aggregate(clean: pd.DataFrame) -> pd.DataFrame:
    """Daily mean, minimum and maximum temperature per station."""
    daily = clean.groupby(["station", "day"])["temperature_c"].agg(["mean", "min", "max", "count"])
    return daily.reset_index()


@task
def summary(aggregate: pd.DataFrame) -> dict:
    """The warmest station and the overall mean, for a quick look."""
    means = aggregate.groupby("station")["mean"].mean()
    return {"stations": len(means), "warmest": str(means.idxmax()), "mean_c": round(float(means.mean()), 2)}
