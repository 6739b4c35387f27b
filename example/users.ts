import { Controller, Get, Injectable, Param } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import { DataSource } from 'typeorm';
import { Tombstoned, TombstoneService } from '../src/index.js';
import { User } from './entities.js';
import { ParseInt4Pipe } from './validation.js';

@Injectable()
export class UsersService {
  constructor(
    @InjectDataSource() private readonly db: DataSource,
    private readonly tombstones: TombstoneService,
  ) {}

  /** Throws EntityNotFoundError on a miss: the tombstone answers that too. */
  findOne(id: number): Promise<User> {
    return this.db.getRepository(User).findOneByOrFail({ id });
  }

  /**
   * Folds `duplicates` into `survivor`: their URLs redirect to the survivor from now on.
   * `merge()` locks the rows, deletes the duplicates and records the merge, in one transaction.
   */
  async merge(survivor: number, duplicates: number[]): Promise<void> {
    await this.tombstones.merge(User, { into: survivor, from: duplicates });
  }
}

@Controller('users')
@Tombstoned('user')
export class UsersController {
  constructor(private readonly users: UsersService) {}

  /** `/users/abc` and `/users/2147483648` (beyond the `integer` column) are 400s: the pipe rejects them before any lookup. */
  @Get(':id')
  findOne(@Param('id', ParseInt4Pipe) id: number): Promise<User> {
    return this.users.findOne(id);
  }
}
