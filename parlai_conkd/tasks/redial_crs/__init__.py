"""ReDial as a conversational-recommendation task (`-t redial_crs`); see README.md here."""
