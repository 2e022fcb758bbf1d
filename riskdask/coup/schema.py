"""The REIGN columns the seed describes ("Data Description": 38 columns in 5 groups).

Names, groups and types follow the seed; real REIGN releases add a few columns
(``gov_democracy``, ``dem_duration``, ``political_violence``; merged copies add more) -- the
loader accepts any extra column and ignores it.
"""

from __future__ import annotations

__all__ = ["IDENTIFIERS", "TEXT_COLUMNS", "LEADER", "ELECTION", "IRREGULAR", "SEED_COLUMNS",
           "GOVERNMENT_TYPES", "DROPPED", "TARGET", "SUCCESS", "BINARY_COLUMNS",
           "DEFAULT_NUMERIC_FEATURES", "government_dummies", "DEFAULT_FEATURE_COUNT"]

#: 1. Observation identifiers.
IDENTIFIERS = ("ccode", "country", "leader", "year", "month")
#: Text identifiers: never features.
TEXT_COLUMNS = ("country", "leader")
#: 2. Leader characteristics.
LEADER = ("elected", "age", "male", "militarycareer", "tenure_months")
#: 4. Election events (20 columns).
ELECTION = ("anticipation", "ref_ant", "leg_ant", "exec_ant", "irreg_lead_ant", "election_now",
            "election_recent", "leg_recent", "exec_recent", "lead_recent", "ref_recent",
            "direct_recent", "indirect_recent", "victory_recent", "defeat_recent",
            "change_recent", "nochange_recent", "delayed", "lastelection", "loss")
#: 5. Irregular events.
IRREGULAR = ("irregular", "prev_conflict", "pt_suc", "pt_attempt", "precip", "couprisk",
             "pctile_risk")
#: The seed's 38 columns, in its order (3. regime characteristics is ``government``).
SEED_COLUMNS = IDENTIFIERS + LEADER + ("government",) + ELECTION + IRREGULAR

#: The 16 regime types, spelled as in REIGN's ``government`` column (seed: "16 regime types").
GOVERNMENT_TYPES = (
    "Dominant Party", "Foreign/Occupied", "Indirect Military", "Military",
    "Military-Personal", "Monarchy", "Oligarchy", "Parliamentary Democracy", "Party-Military",
    "Party-Personal", "Party-Personal-Military Hybrid", "Personal Dictatorship",
    "Presidential Democracy", "Provisional - Civilian", "Provisional - Military", "Warlordism",
)

#: Undefined in the seed, removed ("Removing Undefined Features").
DROPPED = ("irregular", "couprisk", "pctile_risk")
#: The target.
TARGET = "pt_attempt"
#: A successful coup implies an attempt: a target leak, never a feature.
SUCCESS = "pt_suc"

#: Columns that must be 0 or 1 when present. (``prev_conflict`` is not one of them: the seed
#: calls it a flag, but real REIGN 2021 rows hold counts 0-5 -- see tests/data/coup_reign_*.)
BINARY_COLUMNS = ("elected", "male", "militarycareer", "pt_suc", "pt_attempt",
                  *(c for c in ELECTION if c not in ("lastelection", "loss")))

#: The seed's numeric features: its 35 columns after the drop, less the target, the leak
#: ``pt_suc``, the text identifiers and ``government`` (one-hot encoded separately).
DEFAULT_NUMERIC_FEATURES = tuple(
    c for c in SEED_COLUMNS
    if c not in DROPPED and c not in TEXT_COLUMNS and c not in (TARGET, SUCCESS, "government")
)


def government_dummies() -> list[str]:
    """One-hot column names, ``government_<type>``, as pandas ``get_dummies`` names them."""
    return [f"government_{g}" for g in GOVERNMENT_TYPES]


#: 30 numeric + 16 one-hot regime columns = 46 features. (The seed counts 50 columns after
#: one-hot encoding; those include the target, ``pt_suc`` and the two text identifiers.)
DEFAULT_FEATURE_COUNT = len(DEFAULT_NUMERIC_FEATURES) + len(GOVERNMENT_TYPES)
