package tests

import "github.com/myelin-chat/myelin/config"

type configT = config.Config
