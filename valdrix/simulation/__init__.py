"""simulation: what a candidate policy would have decided over stored decisions."""
