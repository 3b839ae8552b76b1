module ferry.local/flagd-eval

go 1.25.0

require github.com/open-feature/flagd/core v0.16.1
