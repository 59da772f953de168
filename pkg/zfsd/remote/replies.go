package remote

// convert turns v into its other form, unless err came instead of it.
func convert[T, R any](v T, err error, to func(T) R) (R, error) {
	if err != nil {
		var none R
		return none, err
	}
	return to(v), nil
}

// convertAll turns each of list into its other form.
func convertAll[T, R any](list []T, to func(T) R) []R {
	out := make([]R, 0, len(list))
	for _, v := range list {
		out = append(out, to(v))
	}
	return out
}
