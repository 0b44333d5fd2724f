package buckets

// RetryTransientForTest exposes retryTransient to the external tests.
var RetryTransientForTest = retryTransient
