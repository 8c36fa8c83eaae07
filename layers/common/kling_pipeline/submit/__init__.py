"""The submit function: intake (pure), admission (one paid POST), refusal (notify, park)."""
