"""The doctor's reading: corrections, the review queue's data and the training export."""
