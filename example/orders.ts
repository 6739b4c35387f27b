import { Controller, Get, Headers, Injectable, NotFoundException, Param } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import { DataSource } from 'typeorm';
import { Tombstoned } from '../src/index.js';
import { Order } from './entities.js';
import { ParseInt4Pipe } from './validation.js';

@Injectable()
export class OrdersService {
  constructor(@InjectDataSource() private readonly db: DataSource) {}

  async findOne(tenant: string, number: number): Promise<Order> {
    const order = await this.db.getRepository(Order).findOneBy({ tenant, number });
    if (!order) throw new NotFoundException();
    return order;
  }

  /**
   * A tenant's order deleted for good; other tenants never learn it existed. The trigger records
   * it in the tenant's scope (the `tenant` column), with the reason of the current context.
   */
  async remove(tenant: string, number: number): Promise<void> {
    await this.db.getRepository(Order).delete({ tenant, number });
  }
}

/** Orders belong to the tenant named by the `X-Tenant-Id` header. */
@Controller('orders')
export class OrdersController {
  constructor(private readonly orders: OrdersService) {}

  @Get(':id')
  @Tombstoned('order', { scope: { header: 'x-tenant-id' } })
  findOne(@Param('id', ParseInt4Pipe) id: number, @Headers('x-tenant-id') tenant = ''): Promise<Order> {
    return this.orders.findOne(tenant, id);
  }
}
