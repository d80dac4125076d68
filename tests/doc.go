// Package tests holds Myelin's black-box tests: each starts the real server
// (setup/testserver) on 127.0.0.1 and drives it through its HTTP APIs only.
package tests
