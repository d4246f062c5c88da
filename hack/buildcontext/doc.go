// Package buildcontext holds no code: its test checks that every Docker build context of the
// repository, and every file the offline kind node image refers to, is committed to git, so a
// fresh clone can build what a working tree could.
package buildcontext
