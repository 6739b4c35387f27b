import { ConfigurableModuleBuilder } from '@nestjs/common';
import type { TombstoneModuleOptions } from './tombstone.options.js';

export const {
  ConfigurableModuleClass,
  MODULE_OPTIONS_TOKEN,
  OPTIONS_TYPE,
  ASYNC_OPTIONS_TYPE,
} = new ConfigurableModuleBuilder<TombstoneModuleOptions>({ moduleName: 'Tombstone' })
  .setClassMethodName('forRoot')
  .setFactoryMethodName('createTombstoneOptions')
  .setExtras({ isGlobal: false }, (definition, extras) => ({ ...definition, global: extras.isGlobal }))
  .build();
