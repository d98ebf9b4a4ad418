// Host emulation (see emu.h).
#pragma once
#include "emu.h"
