//go:build race

package debpkg

func init() { raceEnabled = true }
