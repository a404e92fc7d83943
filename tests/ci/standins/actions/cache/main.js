// actions/cache stand-in, restore: $MLGATE_ACT_CACHE/<sha256(key)>.tar holds the paths (relative to /).
const { restore } = require('./cache.js');
restore();
