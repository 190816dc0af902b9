"""What the engine is told: the schedule file marketers edit and the settings operators set in
the environment.
"""
