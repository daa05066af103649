"""The session domain: sessions, their lifecycle, and their transcripts."""
