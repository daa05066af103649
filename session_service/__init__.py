"""SessionService: sessions prepared from configs, their lifecycle, and message turns."""
