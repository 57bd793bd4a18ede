"""Randomness every behaviour shares: slow wander, and the housekeeping fields of a reading."""

from __future__ import annotations

import math
import random

Fields = dict[str, object]

# Battery-powered nodes piggyback housekeeping on some readings only, so the optional
# fields of SPEC section 1 show up now and then, as they do from real firmware.
BATTERY_SHARE = 0.1
RSSI_SHARE = 0.2
BATTERY_V = (3.6, 4.15)  # a charged 1-cell Li-ion pack (hard bounds 2.5-4.3 V in jakarta.md 5)
RSSI_DBM = (-78.0, 8.0, -115.0, -45.0)  # mean, spread, floor, ceiling of an urban radio link


def add_diagnostics(fields: Fields, rng: random.Random) -> None:
    """Adds battery voltage and signal strength to some readings."""
    if rng.random() < BATTERY_SHARE:
        fields["battery_v"] = round(rng.uniform(*BATTERY_V), 2)
    if rng.random() < RSSI_SHARE:
        mean, spread, floor, ceiling = RSSI_DBM
        fields["rssi_dbm"] = round(min(max(mean + jitter(rng, spread), floor), ceiling))


def jitter(rng: random.Random, sd: float) -> float:
    """Bell-shaped noise of standard deviation `sd`, bounded at 3 sd.

    The sum of three uniforms: close enough to a normal for sensor noise, four times
    cheaper than `random.gauss` (pure Python), and never an absurd outlier.
    """
    return (rng.random() + rng.random() + rng.random() - 1.5) * 2.0 * sd


def wander(value: float, dt: float, tau_s: float, sd: float, rng: random.Random) -> float:
    """One step of a mean-reverting random walk (Ornstein-Uhlenbeck) around zero.

    Exact for any step `dt`: the walk keeps its spread `sd` whether a device reports every
    minute or every hour, and forgets its past over `tau_s`.
    """
    keep = math.exp(-max(dt, 0.0) / tau_s)
    return value * keep + jitter(rng, sd * math.sqrt(1.0 - keep * keep))
