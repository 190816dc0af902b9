"""What operators and their monitors read about a running engine."""
