"""ConKD dialogue teacher: a generator over words + item tokens (``-m conkd_dialogue_teacher``)."""
