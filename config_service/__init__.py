"""ConfigService: agent bundle configs with validation, revisions and in-place edits."""
