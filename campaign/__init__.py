"""An email nurture campaign engine. Each sub-package owns one part of the work; `model` and
`planner` are the pure core every part shares.
"""
