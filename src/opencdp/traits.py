"""Pure trait merge rules: key by key, by event time.

Every stored trait key carries the stamp ``[eventTime, receivedTime]`` of the call that
set it. An incoming key replaces the stored value only when its stamp is at least the
stored one, so an older identify that arrives late never overwrites a newer value, and
between equal event times the call received later wins. The result does not depend on
the order in which calls arrive (a property test proves it).

``marketingPreferences.channels`` is merged channel by channel, each channel with its
own stamp; channels are kept sorted by name so the merged list is the same whatever
the arrival order.
"""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]
Stamp = list[int]
Stamps = dict[str, Stamp]

PREFERENCES = "marketingPreferences"
CHANNELS = "channels"


def merge_traits(traits: JSON, stamps: Stamps, incoming: JSON, stamp: Stamp) -> bool:
    """Merge ``incoming`` into ``traits`` in place; True when anything changed."""
    changed = False
    for key, value in incoming.items():
        if key == PREFERENCES and isinstance(value, dict):
            changed |= _merge_preferences(traits, stamps, value, stamp)
        elif _wins(stamp, stamps.get(key)):
            traits[key] = value
            stamps[key] = stamp
            changed = True
    return changed


def fill_traits(traits: JSON, stamps: Stamps, donor: JSON, donor_stamps: Stamps) -> None:
    """Give ``traits`` the keys it lacks from ``donor`` (a profile merged into it)."""
    for key, value in donor.items():
        if key not in traits:
            traits[key] = value
            for path, path_stamp in donor_stamps.items():
                if path == key or path.startswith(key + "."):
                    stamps[path] = path_stamp
        elif key == PREFERENCES and isinstance(value, dict):
            _fill_preferences(traits, stamps, value, donor_stamps)


def _wins(stamp: Stamp, stored: Stamp | None) -> bool:
    return stored is None or stamp >= stored


def _merge_preferences(traits: JSON, stamps: Stamps, incoming: JSON, stamp: Stamp) -> bool:
    current = traits.get(PREFERENCES)
    preferences: JSON = dict(current) if isinstance(current, dict) else {}
    changed = False
    for key, value in incoming.items():
        if key == CHANNELS and isinstance(value, list):
            changed |= _merge_channels(preferences, stamps, value, stamp)
        elif _wins(stamp, stamps.get(f"{PREFERENCES}.{key}")):
            preferences[key] = value
            stamps[f"{PREFERENCES}.{key}"] = stamp
            changed = True
    if changed or not isinstance(current, dict):
        traits[PREFERENCES] = preferences
    return changed


def _merge_channels(preferences: JSON, stamps: Stamps, incoming: list[Any], stamp: Stamp) -> bool:
    channels = _channels_by_name(preferences.get(CHANNELS))
    changed = False
    for entry in incoming:
        if not isinstance(entry, dict) or not isinstance(entry.get("channel"), str):
            continue
        path = f"{PREFERENCES}.{CHANNELS}.{entry['channel']}"
        if _wins(stamp, stamps.get(path)):
            channels[entry["channel"]] = entry
            stamps[path] = stamp
            changed = True
    preferences[CHANNELS] = [channels[name] for name in sorted(channels)]
    return changed


def _fill_preferences(traits: JSON, stamps: Stamps, donor: JSON, donor_stamps: Stamps) -> None:
    preferences = traits[PREFERENCES]
    if not isinstance(preferences, dict):
        return
    for key, value in donor.items():
        if key == CHANNELS and isinstance(value, list):
            channels = _channels_by_name(preferences.get(CHANNELS))
            for name, entry in _channels_by_name(value).items():
                if name not in channels:
                    channels[name] = entry
                    _copy_stamp(stamps, donor_stamps, f"{PREFERENCES}.{CHANNELS}.{name}")
            preferences[CHANNELS] = [channels[name] for name in sorted(channels)]
        elif key not in preferences:
            preferences[key] = value
            _copy_stamp(stamps, donor_stamps, f"{PREFERENCES}.{key}")


def _channels_by_name(value: Any) -> dict[str, JSON]:
    if not isinstance(value, list):
        return {}
    return {
        entry["channel"]: entry
        for entry in value
        if isinstance(entry, dict) and isinstance(entry.get("channel"), str)
    }


def _copy_stamp(stamps: Stamps, donor_stamps: Stamps, path: str) -> None:
    if path in donor_stamps:
        stamps[path] = donor_stamps[path]
