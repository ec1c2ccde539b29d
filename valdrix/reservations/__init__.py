"""reservations: settling, reconciling and releasing the budget and credit held by decisions."""
