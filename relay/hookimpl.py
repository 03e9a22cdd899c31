"""The decorator plugin authors put on hook implementations."""

import pluggy

hookimpl = pluggy.HookimplMarker("trackrelay")
