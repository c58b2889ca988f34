"""What each target row starts as: the plan (copy, FVT, mean, sampled)
built from a token map, and FVT's splitting of an unmatched token into
source pieces and their weights; the plan is applied with the row ops."""
