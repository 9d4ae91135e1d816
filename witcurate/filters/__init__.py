"""Every keep/drop decision, as pure functions returning keep or (False, reason)."""
