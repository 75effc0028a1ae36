package service

// DefaultCongestion is the outer TCP connection's default congestion
// control. A tunnel's outer connection sees the path's random loss (Wi-Fi,
// mobile): loss-based algorithms such as cubic, the usual system default,
// halve their window at each loss and collapse (measured in BENCHMARKS.md:
// about ten times slower than bbr at 1% loss), while bbr paces at the
// measured bandwidth and keeps the inner connections moving.
const DefaultCongestion = "bbr"

// SystemCongestion as the --congestion value keeps the kernel's default.
const SystemCongestion = "system"

// CongestionUsage is the --congestion flag's help text.
const CongestionUsage = "TCP congestion control of the outer connection, e.g. bbr or cubic; 'system' keeps the kernel's default (net.ipv4.tcp_congestion_control). bbr keeps throughput on lossy paths where cubic collapses; if the default bbr is not available the system default is used, with a warning"

// CongestionName names what Congestion returned, for logs.
func CongestionName(use string) string {
	if use == "" {
		return SystemCongestion
	}
	return use
}
