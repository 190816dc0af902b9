"""An email nurture campaign engine: schedule, store, planner, renderer, dispatcher, transport."""
