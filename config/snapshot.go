package config

import (
	"fmt"
	"os"
)

// LoadSnapshot loads a configuration egressd saved as its last good one:
// the main file at path, with the allowlists of allowDir whatever the
// file's allow_dir says (the saved copies, not the live directory).
func LoadSnapshot(path, allowDir string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, Errors{{Pos: Pos{File: path}, Msg: fmt.Sprintf("cannot read: %v", err)}}
	}
	c, err := ParseMain(path, data)
	if err != nil {
		return nil, err
	}
	if len(c.Resolvers) == 0 {
		rs, err := systemResolvers(ResolvConf)
		if err != nil {
			return nil, Errors{{Pos: Pos{File: path}, Msg: fmt.Sprintf("no resolvers configured and %v", err)}}
		}
		c.Resolvers = rs
	}
	c.AllowDir = allowDir
	lists, err := LoadAllowDir(allowDir)
	if err != nil {
		return nil, err
	}
	c.Allowlists = lists
	return c, nil
}
