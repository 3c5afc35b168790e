"""The fields every decision form of a paused run shares (an acknowledgement, a plan's
approval): who decided, and a note. One set of limits and titles for the UI; each form
says in its own description what the name and the note are for."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

#: Who decided, recorded with the decision (the UI's "Your name").
DeciderName = Annotated[str, Field(min_length=1, max_length=200, title="Your name")]
#: Anything the person adds, kept with the decision (the UI's "Note").
DecisionNote = Annotated[str, Field(max_length=2000, title="Note")]
