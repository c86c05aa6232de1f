package main

import "github.com/promanage/promanage/plugins"

// runSandbox is the hidden `promanage plugin-sandbox` command: the plugin
// host starts this binary as its compile and run sandbox children (see
// plugins.RunSandbox). It is not meant to be run by hand.
func (m *Main) runSandbox(args []string) int { return plugins.RunSandbox(args) }
